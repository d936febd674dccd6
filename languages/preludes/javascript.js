// stack prelude for JavaScript: node javascript.js SCRIPT [ARGS...]
//
// Loads the Hook from $STACK_HOOK and runs SCRIPT as the main module. If the
// script exports a function, it is called with the hook (hook.io style):
//
//   module.exports = function (hook) { hook.res.end('Hello, ' + hook.params.name) }
//
// hook.res mimics http.ServerResponse (plus Express's status() and json()):
// the body goes to stdout, status and headers to fd 3 as JSON lines. The
// hook is also the global `Hook`. Only fs is required: this runs before
// every call.
'use strict';

const fs = require('fs');

// Without an inherited fd 3 (a script run by hand) libuv's own epoll fd takes
// the number: only a pipe, socket, file or device is the control channel.
let control = false;
try {
  const st = fs.fstatSync(3);
  control = st.isFIFO() || st.isSocket() || st.isFile() || st.isCharacterDevice();
} catch {
  control = false;
}

function send(message) {
  if (!control) return;
  let data = Buffer.from(JSON.stringify(message) + '\n');
  try {
    while (data.length > 0) data = data.subarray(fs.writeSync(3, data));
  } catch {
    control = false;
  }
}

function headerValue(value) {
  return Array.isArray(value) ? value.map(String) : String(value);
}

class Response {
  #statusCode = 200;
  #statusMessage = '';
  #headers = new Map(); // lower-case name -> [name, value]

  constructor() {
    this.headersSent = false;
    this.writableEnded = false;
    this.finished = false;
  }

  get statusCode() {
    return this.#statusCode;
  }

  set statusCode(code) {
    this.#statusCode = Number(code);
    send({ type: 'statusCode', payload: { value: this.#statusCode } });
  }

  get statusMessage() {
    return this.#statusMessage;
  }

  set statusMessage(reason) {
    this.#statusMessage = String(reason);
    send({ type: 'statusMessage', payload: { value: this.#statusMessage } });
  }

  setHeader(name, value) {
    value = headerValue(value);
    this.#headers.set(String(name).toLowerCase(), [String(name), value]);
    send({ type: 'setHeader', payload: { name: String(name), value } });
    return this;
  }

  getHeader(name) {
    const header = this.#headers.get(String(name).toLowerCase());
    return header && header[1];
  }

  getHeaders() {
    const headers = Object.create(null);
    for (const [key, [, value]] of this.#headers) headers[key] = value;
    return headers;
  }

  getHeaderNames() {
    return [...this.#headers.keys()];
  }

  hasHeader(name) {
    return this.#headers.has(String(name).toLowerCase());
  }

  removeHeader(name) {
    this.#headers.delete(String(name).toLowerCase());
    send({ type: 'removeHeader', payload: { name: String(name) } });
  }

  writeHead(code, reason, headers) {
    if (typeof reason !== 'string') {
      headers = reason;
      reason = undefined;
    }
    this.#statusCode = Number(code);
    const sent = {};
    for (const [name, value] of Object.entries(headers || {})) {
      sent[name] = headerValue(value);
      this.#headers.set(name.toLowerCase(), [name, sent[name]]);
    }
    send({ type: 'writeHead', payload: { code: this.#statusCode, headers: sent } });
    if (reason !== undefined) this.statusMessage = reason;
    return this;
  }

  write(chunk, encoding, callback) {
    this.headersSent = true;
    return process.stdout.write(chunk, encoding, callback);
  }

  end(chunk, encoding, callback) {
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (chunk !== undefined && chunk !== null) this.write(chunk, encoding);
    this.headersSent = this.writableEnded = this.finished = true;
    send({ type: 'end' });
    if (callback) process.nextTick(callback);
    return this;
  }

  // Express
  status(code) {
    this.statusCode = code;
    return this;
  }

  json(body) {
    if (!this.hasHeader('content-type')) this.setHeader('Content-Type', 'application/json');
    return this.end(JSON.stringify(body));
  }

  send(body) {
    if (body !== null && typeof body === 'object' && !Buffer.isBuffer(body)) return this.json(body);
    return this.end(body);
  }
}

// Warm (STACK_WARM=1, started ahead of its call with no SCRIPT): say
// {"type": "ready"} on fd 3, then wait for the one call on stdin, 8 hex digits giving the length of a JSON object
// {"argv": [SCRIPT, ARGS...], "env": {...}}; take that argv and environment.
// Read synchronously, exactly the message's bytes: the script gets the rest.
function readExactly(count) {
  const buffer = Buffer.alloc(count);
  let got = 0;
  while (got < count) {
    let n;
    try {
      n = fs.readSync(0, buffer, got, count - got, null);
    } catch (err) {
      if (err.code === 'EAGAIN') continue;
      throw err;
    }
    if (n === 0) process.exit(0); // retired before any call
    got += n;
  }
  return buffer;
}

if (process.env.STACK_WARM === '1') {
  send({ type: 'ready' }); // loaded: the pool counts it as ready
  const length = parseInt(readExactly(8).toString('latin1'), 16);
  const call = JSON.parse(readExactly(length).toString('utf8'));
  for (const name of Object.keys(process.env)) delete process.env[name];
  Object.assign(process.env, call.env);
  process.argv.splice(2, process.argv.length - 2, ...call.argv);
}

const data = process.env.STACK_HOOK
  ? JSON.parse(fs.readFileSync(process.env.STACK_HOOK, 'utf8'))
  : {};
const hook = Object.assign({ params: {}, req: {}, env: {} }, data, {
  res: new Response(),
  debug(...args) {
    send({ type: 'log', payload: { entry: require('util').format(...args) } });
  },
});
global.Hook = hook;

function fail(err) {
  console.error((err && err.stack) || err);
  process.exit(1);
}

function run(exported) {
  // An ES module namespace, or CommonJS compiled from one: its default export.
  if (exported && typeof exported === 'object' && typeof exported.default === 'function'
      && (exported[Symbol.toStringTag] === 'Module' || exported.__esModule)) {
    exported = exported.default;
  }
  if (typeof exported !== 'function') return;
  const result = exported(hook);
  if (result && typeof result.then === 'function') result.then(null, fail);
}

function main() {
  const script = process.argv[2];
  if (!script) {
    console.error('usage: node javascript.js SCRIPT [ARGS...]');
    process.exit(2);
  }
  const file = script.startsWith('/') ? script : `${process.cwd()}/${script}`;
  process.argv.splice(1, 1); // argv[1] is the script, as when node runs it
  if (file.endsWith('.mjs')) {
    const url = 'file://' + file.split('/').map(encodeURIComponent).join('/');
    import(url).then(run, fail);
    return;
  }
  // Module._load with isMain: require.main === module holds in the script.
  run(module.constructor._load(file, null, true));
}

// The event loop is empty, so the script is done: complete the response now,
// before node's own exit (about 5 ms of teardown nobody needs to wait for),
// unless something may still write or fail: the script's own beforeExit or
// exit listeners, or an exit code it set. Pipes and files are written
// synchronously on Linux: everything printed is in the pipe already.
process.once('beforeExit', () => {
  if (hook.res.finished || process.exitCode) return;
  if (process.listenerCount('beforeExit') > 0 || process.listenerCount('exit') > 0) return;
  send({ type: 'end' });
});

main();
