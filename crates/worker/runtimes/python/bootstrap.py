"""nimbus's Python runtime: Lambda's programming model over the Runtime API.

The handler is `module.function` (the module may be a path below /var/task, `pkg/mod.fn`).
Each invocation calls `function(event, context)`; what it returns is serialised as JSON.
An exception becomes Lambda's error object; a module that fails to import is an init error.
"""

import _socket
import importlib
import json
import os
import sys
import time

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
RUNTIME = "/2018-06-01/runtime"


class Api:
    """A minimal HTTP/1.1 client for the Runtime API: http.client alone costs Python ~30 ms
    of imports, a third of a cold start."""

    def __init__(self):
        host, _, port = API.rpartition(":")
        self.address = (host, int(port))
        self.sock = None
        self.buffer = b""

    def _connect(self):
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.connect(self.address)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the Runtime API closed the connection")
        self.buffer += chunk

    def _read_until(self, marker):
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exact(self, n):
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _exchange(self, method, path, body, headers):
        head = f"{method} {RUNTIME}{path} HTTP/1.1\r\nHost: {API}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(head.encode("latin-1") + b"\r\n" + body)
        lines = self._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        response_headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        if response_headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    self._read_until(b"\r\n")
                    break
                data += self._read_exact(size)
                self._read_exact(2)
        else:
            data = self._read_exact(int(response_headers.get("content-length", "0")))
        return status, response_headers, data

    def call(self, method, path, body=b"", headers=None):
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                return self._exchange(method, path, body, headers or {})
            except (ConnectionError, OSError):
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                if attempt:
                    raise


class _Fields:
    """An object whose attributes are a JSON object's members (None for absent ones)."""

    _names = ()

    def __init__(self, values):
        values = values if isinstance(values, dict) else {}
        for name, key in self._names:
            setattr(self, name, values.get(key))

    def __repr__(self):
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n, _ in self._names)
        return f"{type(self).__name__}({inner})"


class Client(_Fields):
    _names = (
        ("installation_id", "installation_id"),
        ("app_title", "app_title"),
        ("app_version_name", "app_version_name"),
        ("app_version_code", "app_version_code"),
        ("app_package_name", "app_package_name"),
    )


class ClientContext(_Fields):
    _names = (("custom", "custom"), ("env", "env"), ("client", "client"))

    def __init__(self, values):
        super().__init__(values)
        self.client = Client(self.client) if self.client is not None else None


class CognitoIdentity(_Fields):
    _names = (
        ("cognito_identity_id", "cognitoIdentityId"),
        ("cognito_identity_pool_id", "cognitoIdentityPoolId"),
    )


class Context:
    def __init__(self, request_id, deadline_ms, function_arn, client_context, identity):
        self.aws_request_id = request_id
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = function_arn
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        # As AWS's runtime gives them: objects, not dicts; no client context without the
        # header, an identity with empty fields without one.
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self.identity = CognitoIdentity(identity)
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def user_frames(exc):
    """The formatted frames of an exception's traceback that are the function's own: the
    runtime's frames (this file, importlib's machinery) are left out, as AWS's runtime does."""
    import traceback

    own = os.path.abspath(__file__)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.abspath(f.filename) != own and not f.filename.startswith("<frozen importlib")
    ]
    return traceback.format_list(frames)


def error_object(exc, request_id=""):
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": user_frames(exc),
    }


def post_init_error(api, error_type, message, exc=None):
    body = {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": []}
    if exc is not None:
        body["stackTrace"] = user_frames(exc)
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
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("lambda-runtime-trace-id", "")
        client_context = headers.get("lambda-runtime-client-context")
        identity = headers.get("lambda-runtime-cognito-identity")
        context = Context(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn"),
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
