// A module of hello.js.
exports.greeting = (name) => `Hello, ${name}! (greeting.js)`;
