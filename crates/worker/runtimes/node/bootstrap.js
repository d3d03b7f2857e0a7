// nimbus's Node.js runtime: Lambda's programming model over the Runtime API.
//
// The handler is `file.function` (the file may be a path below /var/task, `.js`, `.cjs` or
// `.mjs`). Handlers may be async (return a promise) or take a callback as third argument.
// A thrown error becomes Lambda's error object; a module that fails to load is an init error.
'use strict';

const net = require('net');
const path = require('path');
const fs = require('fs');
const url = require('url');

const [HOST, PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const RUNTIME = '/2018-06-01/runtime';

// A minimal HTTP/1.1 client for the Runtime API over one kept-alive socket, one exchange at a
// time. Node's `http` module runs several times more JavaScript per exchange, and in a
// sandbox that serves a few requests a second that code stays cold: under load it cost four
// times the CPU of this one.
class RuntimeApi {
  constructor(host, port) {
    this.host = host;
    this.port = port;
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.pending = null;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
      socket.once('connect', () => {
        socket.removeListener('error', reject);
        this.adopt(socket);
        resolve();
      });
      socket.once('error', reject);
      this.listen(socket);
    });
  }

  // Takes `socket`, connected, as the connection to the Runtime API.
  adopt(socket) {
    socket.on('error', () => {});
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
  }

  listen(socket) {
    socket.on('data', (chunk) => {
      this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
      this.parse();
    });
    socket.on('close', () => {
      // Only the current connection's end fails the exchange in progress: one given up
      // earlier (or the template's, closed before a copy was forked) may end at any time.
      if (this.socket !== socket) return;
      this.socket = null;
      const pending = this.pending;
      this.pending = null;
      if (pending) pending.reject(new Error('the Runtime API closed the connection'));
    });
  }

  // Completes the pending exchange once its whole response is in the buffer.
  parse() {
    const pending = this.pending;
    if (!pending) return;
    if (!pending.head) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const lines = this.buffer.toString('latin1', 0, end).split('\r\n');
      const headers = {};
      for (let i = 1; i < lines.length; i++) {
        const colon = lines[i].indexOf(':');
        if (colon > 0) headers[lines[i].slice(0, colon).trim().toLowerCase()] = lines[i].slice(colon + 1).trim();
      }
      pending.head = { status: Number(lines[0].split(' ')[1]), headers };
      this.buffer = this.buffer.subarray(end + 4);
      pending.chunked = (headers['transfer-encoding'] || '').toLowerCase() === 'chunked';
      pending.length = Number(headers['content-length'] || 0);
      pending.parts = [];
    }
    if (pending.chunked) {
      for (;;) {
        const line = this.buffer.indexOf('\r\n');
        if (line < 0) return;
        const size = parseInt(this.buffer.toString('latin1', 0, line), 16);
        if (size === 0) {
          if (this.buffer.length < line + 4) return;
          this.buffer = this.buffer.subarray(line + 4);
          break;
        }
        if (this.buffer.length < line + 2 + size + 2) return;
        pending.parts.push(this.buffer.subarray(line + 2, line + 2 + size));
        this.buffer = this.buffer.subarray(line + 2 + size + 2);
      }
    } else {
      if (this.buffer.length < pending.length) return;
      pending.parts.push(this.buffer.subarray(0, pending.length));
      this.buffer = this.buffer.subarray(pending.length);
    }
    this.pending = null;
    pending.resolve({ status: pending.head.status, headers: pending.head.headers, body: Buffer.concat(pending.parts) });
  }

  async exchange(method, route, body, headers) {
    if (!this.socket) await this.connect();
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
    let head = `${method} ${RUNTIME}${route} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nContent-Length: ${payload.length}\r\n`;
    for (const name of Object.keys(headers || {})) head += `${name}: ${headers[name]}\r\n`;
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject, head: null };
      this.socket.write(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), payload]));
    });
  }

  // A streamed request (chunked, with trailers): the head goes out now, each `chunk` as it
  // comes, and `finish` ends the body (with an error in the trailers, if any) and resolves
  // with the server's answer. The socket must be connected.
  streamStart(route, headers) {
    let head = `POST ${RUNTIME}${route} HTTP/1.1\r\nHost: ${this.host}:${this.port}\r\nTransfer-Encoding: chunked\r\n`;
    for (const name of Object.keys(headers)) head += `${name}: ${headers[name]}\r\n`;
    const answer = new Promise((resolve, reject) => {
      this.pending = { resolve, reject, head: null };
    });
    // An early answer (a refusal) must not go unhandled before `finish` awaits it.
    answer.catch(() => {});
    this.socket.write(head + '\r\n', 'latin1');
    return answer;
  }

  streamChunk(data, done) {
    if (!this.socket || data.length === 0) return done();
    this.socket.write(Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`, 'latin1'), data, CRLF]), () => done());
  }

  streamFinish(answer, trailers) {
    let end = '0\r\n';
    for (const name of Object.keys(trailers || {})) end += `${name}: ${trailers[name]}\r\n`;
    if (this.socket) this.socket.write(end + '\r\n', 'latin1');
    return answer;
  }

  async call(method, route, body, headers) {
    try {
      return await this.exchange(method, route, body, headers);
    } catch (err) {
      // A connection the server closed while idle: once more on a new one.
      this.socket = null;
      return this.exchange(method, route, body, headers);
    }
  }
}

const api = new RuntimeApi(HOST, Number(PORT));
const CRLF = Buffer.from('\r\n', 'latin1');

// Response streaming, as Lambda's Node.js runtimes offer it: a handler wrapped by
// `awslambda.streamifyResponse` gets a writable stream as its second argument, and its bytes
// reach the caller as it writes them. `awslambda.HttpResponseStream.from` starts a function
// URL's response with its status and headers (a JSON prelude, then eight NUL bytes).
const STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';

class HttpResponseStream {
  static from(stream, prelude) {
    stream.setContentType(HTTP_INTEGRATION);
    stream.write(JSON.stringify(prelude || {}));
    stream.write(Buffer.alloc(8));
    return stream;
  }
}

global.awslambda = {
  streamifyResponse(handler) {
    handler[STREAMING] = 'response';
    return handler;
  },
  HttpResponseStream,
};

// A value safe in an HTTP header: printable ASCII only.
function headerSafe(value) {
  return String(value).replace(/[^\x20-\x7e]/g, '').slice(0, 256);
}

// The writable stream a streaming handler writes its response to. Nothing is sent until the
// first write (or the end), so that the content type can still be set. The Writable hands over
// one chunk at a time; `inFlight` is the one on its way to the socket.
function responseStream(requestId) {
  const { Writable } = require('stream');
  let contentType = 'application/octet-stream';
  let answer = null;
  let closed = false;
  let inFlight = Promise.resolve();
  const start = () => {
    if (!answer) {
      answer = api.streamStart(`/invocation/${requestId}/response`, {
        'Content-Type': headerSafe(contentType),
        'Lambda-Runtime-Function-Response-Mode': 'streaming',
        Trailer: 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body',
      });
    }
  };
  const stream = new Writable({
    write(chunk, encoding, done) {
      if (closed) return done();
      start();
      inFlight = new Promise((resolve) => {
        api.streamChunk(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, encoding), () => {
          resolve();
          done();
        });
      });
    },
    final(done) {
      if (!closed) start();
      done();
    },
  });
  stream.setContentType = (type) => {
    contentType = String(type);
  };
  stream.started = () => answer !== null;
  // Ends the request body, with an error in the trailers if given. Anything the handler
  // writes afterwards (from a timer, say) goes nowhere: the connection carries the next
  // exchange.
  stream.finish = async (trailers) => {
    stream.on('error', () => {});
    if (trailers) {
      stream.destroy();
      await inFlight;
    }
    closed = true;
    return api.streamFinish(answer, trailers);
  };
  // Nothing was sent and nothing will be: the failure goes to the error endpoint.
  stream.abandon = () => {
    closed = true;
    stream.on('error', () => {});
    stream.destroy();
  };
  return stream;
}

// The error trailers of a stream that failed part-way: hyper takes trailers of up to 16 KiB,
// so the error body is kept well under that.
function errorTrailers(error) {
  let body = JSON.stringify(error);
  if (body.length > 6000) {
    body = JSON.stringify({ errorType: error.errorType, errorMessage: String(error.errorMessage).slice(0, 4000) });
  }
  return {
    'Lambda-Runtime-Function-Error-Type': headerSafe(error.errorType) || 'Error',
    'Lambda-Runtime-Function-Error-Body': Buffer.from(body).toString('base64'),
  };
}

// Runs a streaming handler to the end of its stream. An error before anything was written
// is reported as any handler's; after, it ends the stream with the error in its trailers.
async function runStreaming(fn, event, context, requestId) {
  const { finished } = require('stream/promises');
  if (!api.socket) await api.connect();
  const stream = responseStream(requestId);
  // A stream destroyed without an error never finishes: that rejects, as an error.
  const ended = finished(stream);
  ended.catch(() => {});
  try {
    await fn(event, stream, context);
    if (!stream.writableEnded && !stream.destroyed) stream.end();
    await ended;
  } catch (err) {
    const error = errorObject(err);
    console.error(`[ERROR] ${error.errorType}: ${error.errorMessage}`);
    if (!stream.started()) {
      stream.abandon();
      return { error };
    }
    await stream.finish(errorTrailers(error));
    return {};
  }
  await stream.finish();
  return {};
}

function call(method, route, body, headers) {
  return api.call(method, route, body, headers);
}

function errorObject(err) {
  const e = err instanceof Error ? err : new Error(String(err));
  return {
    errorType: e.name || 'Error',
    errorMessage: e.message,
    trace: (e.stack || '').split('\n'),
  };
}

async function initError(type, message, err, route = '/init/error') {
  const body = { errorType: type, errorMessage: message, trace: err && err.stack ? err.stack.split('\n') : [] };
  console.error(`[ERROR] ${type}: ${message}`);
  await call('POST', route, JSON.stringify(body), {
    'Lambda-Runtime-Function-Error-Type': type,
    'Content-Type': 'application/json',
  });
  process.exit(1);
}

async function loadHandler() {
  const handler = process.env._HANDLER || '';
  const dot = handler.lastIndexOf('.');
  if (dot <= 0 || dot === handler.length - 1) {
    await initError('Runtime.MalformedHandlerName', `Bad handler ${handler}`);
  }
  const modulePath = handler.slice(0, dot);
  const functionName = handler.slice(dot + 1);
  const root = process.env.LAMBDA_TASK_ROOT || '/var/task';
  const base = path.resolve(root, modulePath);
  const candidates = ['.js', '.mjs', '.cjs'].map((ext) => base + ext);
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) {
    await initError('Runtime.ImportModuleError', `Error: Cannot find module '${modulePath}'`);
  }
  let mod;
  try {
    mod = file.endsWith('.mjs') ? await import(url.pathToFileURL(file).href) : require(file);
  } catch (err) {
    const type = err instanceof SyntaxError ? 'Runtime.UserCodeSyntaxError' : 'Runtime.ImportModuleError';
    await initError(type, `${err.name}: ${err.message}`, err);
  }
  const fn = mod[functionName] || (mod.default && mod.default[functionName]);
  if (typeof fn !== 'function') {
    await initError('Runtime.HandlerNotFound', `${modulePath}.${functionName} is undefined or not exported`);
  }
  return fn;
}

function runHandler(fn, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(result);
    };
    context.done = callback;
    context.succeed = (r) => callback(null, r);
    context.fail = (e) => callback(e);
    try {
      const returned = fn(event, context, callback);
      if (returned && typeof returned.then === 'function') {
        returned.then((r) => callback(null, r), (e) => callback(e));
      } else if (fn.length < 3) {
        callback(null, returned);
      }
    } catch (err) {
      callback(err);
    }
  });
}

// The context object of the invocation whose next-invocation headers are `h`.
function makeContext(h) {
  const deadline = Number(h['lambda-runtime-deadline-ms'] || 0);
  return {
    awsRequestId: h['lambda-runtime-aws-request-id'],
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: h['lambda-runtime-client-context'] ? JSON.parse(h['lambda-runtime-client-context']) : undefined,
    identity: h['lambda-runtime-cognito-identity'] ? JSON.parse(h['lambda-runtime-cognito-identity']) : undefined,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
  };
}

// SnapStart: the hooks registered through `snapshot-restore-node` (kept on the global object),
// before ones in the reverse order of registration, after ones in order.
async function runHooks(kind) {
  const hooks = globalThis[Symbol.for('nimbus.snapstart.hooks')];
  if (!hooks) return;
  const list = kind === 'before' ? hooks.before.slice().reverse() : hooks.after.slice();
  for (const [hook, args] of list) {
    try {
      await hook(...args);
    } catch (err) {
      const e = errorObject(err);
      if (kind === 'before') await initError('Runtime.BeforeSnapshotError', `${e.errorType}: ${e.errorMessage}`, err);
      await initError('Runtime.AfterRestoreError', `${e.errorType}: ${e.errorMessage}`, err, '/restore/error');
    }
  }
}

// Reads from `channel` until a whole line is in; null if it closes first.
function readLine(native, channel, first) {
  let data = first;
  while (data.length === 0 || data[data.length - 1] !== 10) {
    const more = native.receive(channel, 1 << 20, 0).data;
    if (more.length === 0) return null;
    data = Buffer.concat([data, more]);
  }
  return data;
}

// What must differ between environments restored from one snapshot: Math.random's state and
// the UUIDs crypto.randomUUID buffers are in the template's memory, shared by every copy.
// Math.random draws from the kernel's randomness through OpenSSL instead (which reseeds in a
// process whose pid differs from the one that seeded it: a copy's always does), and randomUUID
// skips its buffer. Each call starts a fresh pool.
let randomUUID = null;
function reseed() {
  const crypto = require('crypto');
  const pool = new Uint32Array(1024);
  let next = pool.length;
  Math.random = function random() {
    if (next + 2 > pool.length) {
      crypto.randomFillSync(pool);
      next = 0;
    }
    const high = pool[next++] >>> 5;
    const low = pool[next++] >>> 6;
    return (high * 67108864 + low) / 9007199254740992;
  };
  if (randomUUID === null) {
    randomUUID = crypto.randomUUID;
    crypto.randomUUID = function (options) {
      return randomUUID({ ...options, disableEntropyCache: true });
    };
    if (globalThis.crypto && typeof globalThis.crypto.randomUUID === 'function') {
      Object.defineProperty(globalThis.crypto, 'randomUUID', {
        value: () => randomUUID({ disableEntropyCache: true }),
        writable: true,
        configurable: true,
      });
    }
  }
}

// With `whole`, every variable is removed and set again, so that none is left pointing into
// the block the process started with (which a copy rewrites with its own variables). Without,
// only what differs changes: every write to `process.env` is a libc call, and one to `TZ` makes
// V8 and ICU look up the time zone again (milliseconds, in a copy's first moments).
function setEnvironment(env, whole) {
  const current = process.env;
  for (const key of Object.keys(current)) {
    if (whole || !Object.prototype.hasOwnProperty.call(env, key)) delete current[key];
  }
  for (const [key, value] of Object.entries(env)) {
    if (current[key] !== value) current[key] = value;
  }
}

// Runs the runtime's own code for taking an invocation on made-up values (user code is not
// run): in a template, so that it is compiled before the snapshot rather than in every
// environment; in a copy waiting to be claimed, so that the pages it writes to are copied
// then rather than during its first invocation.
function rehearse() {
  const fake = new RuntimeApi(HOST, Number(PORT));
  const body = '{"a":[1,2.5,"x",null,true]}';
  fake.buffer = Buffer.from(
    'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: r\r\n' +
      `Lambda-Runtime-Deadline-Ms: 1\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    'latin1',
  );
  let answer = null;
  fake.pending = { resolve: (r) => (answer = r), reject: () => {}, head: null };
  fake.parse();
  const context = makeContext(answer.headers);
  context.getRemainingTimeInMillis();
  JSON.stringify(JSON.parse(answer.body.toString('utf8')));
  JSON.parse(JSON.stringify({ env: process.env }));
  Buffer.concat([Buffer.from(`GET ${RUNTIME}/invocation/next HTTP/1.1\r\n`, 'latin1'), Buffer.alloc(0)]);
  errorObject(new Error('rehearsal'));
  reseed();
  Math.random();
  require('crypto').randomUUID();
}

// A full collection in the template, as the Python runtime does before it forks: the copies
// inherit a heap without garbage and with no collection half done, which each of them would
// otherwise finish on its own, writing to pages they share. `gc` is exposed in a context of
// its own only, never to the function.
function collectGarbage() {
  const v8 = require('v8');
  v8.setFlagsFromString('--expose-gc');
  const gc = require('vm').runInNewContext('gc');
  v8.setFlagsFromString('--no-expose-gc');
  gc();
}

// The template of a SnapStart version: initialised, it runs the before-snapshot hooks, then
// forks a copy of itself for every environment the worker restores (in the addon: Node has no
// fork). Each copy enters a jail of its own, takes the environment's variables and
// credentials, gets fresh random numbers and runs the after-restore hooks. Returns in a copy.
async function serveSnapshot() {
  await runHooks('before');
  const native = require('/var/runtime/node/snapshot.node');
  rehearse();
  // One real exchange with the Runtime API (an unknown path: a 404), for the same reason.
  await call('GET', '/snapshot/rehearsal').catch(() => {});
  if (api.socket) {
    const socket = api.socket;
    api.socket = null;
    socket.destroy();
  }
  collectGarbage();
  const channel = native.serve('nimbus-snapshot');
  let env;
  try {
    native.send(channel, Buffer.from('hello\n'));
    const jail = native.receive(channel, 1 << 20, 3);
    const line = readLine(native, channel, jail.data);
    if (line === null) native.exit(70);
    const message = JSON.parse(line.toString('utf8'));
    if (jail.fds.length !== 3) throw new Error(`${jail.fds.length} descriptors came with the jail, not 3`);
    const [pidfd, out, err] = jail.fds;
    native.enterJail(pidfd, message.uid, message.gid, out, err);
    // A copy has the template's main thread only: Node's own exit would wait for threads that
    // are not there, so every way out ends the process at once.
    process.reallyExit = (code) => native.exit(code === undefined ? 0 : code);
    process.on('uncaughtException', (error) => {
      console.error(error);
      native.exit(1);
    });
    Object.defineProperty(process, 'pid', { value: native.getpid(), enumerable: true, configurable: true });
    native.dropSockets(channel);
    process.chdir(process.env.LAMBDA_TASK_ROOT || '/var/task');
    native.send(channel, Buffer.from('ok\n'));
    rehearse();
    setEnvironment(JSON.parse(JSON.stringify(process.env)), true);
    // The Runtime API's listener already waits in the jail: connected now (without a turn of
    // the event loop, which would run the init's timers before the copy is claimed), the
    // first request goes out as soon as the variables are in.
    try {
      const socket = new net.Socket({ fd: native.connect(Number(PORT)), readable: true, writable: true });
      socket.setNoDelay(true);
      api.listen(socket);
      api.adopt(socket);
    } catch (_) {
      api.socket = null;
    }
    // Confined; restored ahead of need, the copy waits here for its variables and credentials
    // (the worker closes the channel if it is never needed).
    const vars = readLine(native, channel, Buffer.alloc(0));
    if (vars === null) native.exit(0);
    env = JSON.parse(vars.toString('utf8')).env;
  } catch (error) {
    try {
      native.send(channel, Buffer.from(`error ${error.name}: ${error.message}\n`));
    } catch (_) {}
    native.exit(72);
  }
  native.close(channel);
  setEnvironment(env);
  native.rewriteEnviron(Buffer.from(Object.entries(env).map(([k, v]) => `${k}=${v}\0`).join('')));
  reseed();
}

async function main() {
  const fn = await loadHandler();
  if (process.env._NIMBUS_SNAPSHOT === 'template') {
    await serveSnapshot();
    await runHooks('after');
  }
  for (;;) {
    const next = await call('GET', '/invocation/next');
    if (next.status !== 200) {
      console.error(`runtime API answered ${next.status} to next`);
      continue;
    }
    const requestId = next.headers['lambda-runtime-aws-request-id'];
    process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'] || '';
    const context = makeContext(next.headers);
    if (fn[STREAMING] === 'response') {
      let outcome;
      try {
        const event = next.body.length ? JSON.parse(next.body.toString('utf8')) : {};
        outcome = await runStreaming(fn, event, context, requestId);
      } catch (err) {
        outcome = { error: errorObject(err) };
      }
      if (outcome.error) {
        await call('POST', `/invocation/${requestId}/error`, JSON.stringify(outcome.error), {
          'Lambda-Runtime-Function-Error-Type': 'Unhandled',
          'Content-Type': 'application/json',
        });
      }
      continue;
    }
    let body;
    try {
      const event = next.body.length ? JSON.parse(next.body.toString('utf8')) : {};
      const result = await runHandler(fn, event, context);
      body = JSON.stringify(result === undefined ? null : result);
    } catch (err) {
      const error = errorObject(err);
      console.error(`[ERROR] ${error.errorType}: ${error.errorMessage}`);
      await call('POST', `/invocation/${requestId}/error`, JSON.stringify(error), {
        'Lambda-Runtime-Function-Error-Type': 'Unhandled',
        'Content-Type': 'application/json',
      });
      continue;
    }
    await call('POST', `/invocation/${requestId}/response`, body, { 'Content-Type': 'application/json' });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
