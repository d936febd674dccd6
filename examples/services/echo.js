module.exports = function (hook) {
  hook.res.json(hook.params);
};
