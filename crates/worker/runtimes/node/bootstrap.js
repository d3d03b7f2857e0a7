// nimbus's Node.js runtime: Lambda's programming model over the Runtime API.
//
// The handler is `file.function` (the file may be a path below /var/task, `.js`, `.cjs` or
// `.mjs`). Handlers may be async (return a promise) or take a callback as third argument.
// A thrown error becomes Lambda's error object; a module that fails to load is an init error.
'use strict';

const http = require('http');
const path = require('path');
const fs = require('fs');
const url = require('url');

const [HOST, PORT] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const RUNTIME = '/2018-06-01/runtime';
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function call(method, route, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: Number(PORT), path: RUNTIME + route, method, headers: headers || {}, agent },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
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
