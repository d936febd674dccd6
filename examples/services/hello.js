module.exports = function (hook) {
  hook.res.end(`Hello, ${hook.params.name || 'world'}!\n`);
};
