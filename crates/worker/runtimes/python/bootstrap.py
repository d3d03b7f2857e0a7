"""nimbus's Python runtime: Lambda's programming model over the Runtime API.

The handler is `module.function` (the module may be a path below /var/task, `pkg/mod.fn`).
Each invocation calls `function(event, context)`; what it returns is serialised as JSON.
An exception becomes Lambda's error object; a module that fails to import is an init error.
"""

import http.client
import importlib
import json
import os
import sys
import time
import traceback

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
RUNTIME = "/2018-06-01/runtime"


class Api:
    def __init__(self):
        host, _, port = API.partition(":")
        self.conn = http.client.HTTPConnection(host, int(port or 80))

    def call(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.conn.request(method, RUNTIME + path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                return response.status, response.headers, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise


class Context:
    def __init__(self, request_id, deadline_ms, function_arn, client_context, identity):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.client_context = client_context
        self.identity = identity
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def error_object(exc, request_id=""):
    frames = traceback.extract_tb(exc.__traceback__)
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def post_init_error(api, error_type, message, exc=None):
    body = {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": []}
    if exc is not None:
        body["stackTrace"] = traceback.format_list(traceback.extract_tb(exc.__traceback__))
    sys.stderr.write(f"[ERROR] {error_type}: {message}\n")
    api.call(
        "POST",
        "/init/error",
        json.dumps(body).encode(),
        {"Lambda-Runtime-Function-Error-Type": error_type, "Content-Type": "application/json"},
    )
    sys.exit(1)


def load_handler(api):
    handler = os.environ.get("_HANDLER", "")
    module_name, _, function_name = handler.rpartition(".")
    if not module_name or not function_name:
        post_init_error(api, "Runtime.MalformedHandlerName", f"Bad handler '{handler}': not enough values to unpack")
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    sys.path.insert(0, task_root)
    module_name = module_name.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        post_init_error(api, "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}", exc)
    except SyntaxError as exc:
        post_init_error(api, "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}", exc)
    except Exception as exc:  # the module's own code failed while importing
        post_init_error(api, type(exc).__name__, str(exc), exc)
    function = getattr(module, function_name, None)
    if function is None:
        post_init_error(api, "Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return function


def main():
    api = Api()
    handler = load_handler(api)
    while True:
        status, headers, body = api.call("GET", "/invocation/next")
        if status != 200:
            sys.stderr.write(f"runtime API answered {status} to next\n")
            time.sleep(0.01)
            continue
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("Lambda-Runtime-Trace-Id", "")
        client_context = headers.get("Lambda-Runtime-Client-Context")
        identity = headers.get("Lambda-Runtime-Cognito-Identity")
        context = Context(
            request_id,
            int(headers.get("Lambda-Runtime-Deadline-Ms", "0")),
            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
            json.loads(client_context) if client_context else None,
            json.loads(identity) if identity else None,
        )
        try:
            event = json.loads(body) if body else {}
            result = handler(event, context)
            payload = json.dumps(result).encode()
        except Exception as exc:
            error = error_object(exc, request_id)
            sys.stderr.write(f"[ERROR] {error['errorType']}: {error['errorMessage']}\n")
            api.call(
                "POST",
                f"/invocation/{request_id}/error",
                json.dumps(error).encode(),
                {"Lambda-Runtime-Function-Error-Type": "Unhandled", "Content-Type": "application/json"},
            )
            continue
        api.call("POST", f"/invocation/{request_id}/response", payload, {"Content-Type": "application/json"})


if __name__ == "__main__":
    main()
