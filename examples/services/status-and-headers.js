// 201 Created with custom headers, Express style.
module.exports = function (hook) {
  hook.res.status(201);
  hook.res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  hook.res.setHeader('X-Created-By', 'stack');
  hook.res.end(`created ${hook.params.name || 'something'}\n`);
};
