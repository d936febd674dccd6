// require('./...') is relative to this file, as ever.
const { greeting } = require('./greeting');

module.exports = function (hook) {
  hook.res.end(greeting(hook.params.name || 'world') + '\n');
};
