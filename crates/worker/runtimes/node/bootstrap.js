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
        socket.on('error', () => {});
        this.socket = socket;
        this.buffer = Buffer.alloc(0);
        resolve();
      });
      socket.once('error', reject);
      socket.on('data', (chunk) => {
        this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
        this.parse();
      });
      socket.on('close', () => {
        if (this.socket === socket) this.socket = null;
        const pending = this.pending;
        this.pending = null;
        if (pending) pending.reject(new Error('the Runtime API closed the connection'));
      });
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

async function initError(type, message, err) {
  const body = { errorType: type, errorMessage: message, trace: err && err.stack ? err.stack.split('\n') : [] };
  console.error(`[ERROR] ${type}: ${message}`);
  await call('POST', '/init/error', JSON.stringify(body), {
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

async function main() {
  const fn = await loadHandler();
  for (;;) {
    const next = await call('GET', '/invocation/next');
    if (next.status !== 200) {
      console.error(`runtime API answered ${next.status} to next`);
      continue;
    }
    const h = next.headers;
    const requestId = h['lambda-runtime-aws-request-id'];
    const deadline = Number(h['lambda-runtime-deadline-ms'] || 0);
    process.env._X_AMZN_TRACE_ID = h['lambda-runtime-trace-id'] || '';
    const context = {
      awsRequestId: requestId,
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
