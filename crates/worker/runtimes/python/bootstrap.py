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
        if self.sock is not None:
            return
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


def post_init_error(api, error_type, message, exc=None, path="/init/error"):
    body = {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": []}
    if exc is not None:
        body["stackTrace"] = user_frames(exc)
    sys.stderr.write(f"[ERROR] {error_type}: {message}\n")
    api.call(
        "POST",
        path,
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


def run_hooks(api, kind):
    """Runs the hooks registered with AWS's snapshot_restore_py (the copy the function imported,
    if it bundles its own), in the order they were registered."""
    try:
        import snapshot_restore_py
    except ImportError:
        return
    hooks = snapshot_restore_py.get_before_snapshot() if kind == "before" else snapshot_restore_py.get_after_restore()
    for hook, args, kwargs in list(hooks):
        try:
            hook(*args, **kwargs)
        except Exception as exc:
            if kind == "before":
                post_init_error(api, "Runtime.BeforeSnapshotError", f"{type(exc).__name__}: {exc}", exc)
            post_init_error(api, "Runtime.AfterRestoreError", f"{type(exc).__name__}: {exc}", exc, "/restore/error")


# Namespaces a restored environment enters through its jail's pidfd.
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_JAIL_NAMESPACES = _CLONE_NEWNS | _CLONE_NEWUTS | _CLONE_NEWIPC | _CLONE_NEWUSER | _CLONE_NEWPID | _CLONE_NEWNET


def _receive(sock, size, max_fds):
    import array
    import socket

    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(max_fds * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    return data, list(fds)


def _refuse_setns(libc):
    """Adds a seccomp filter that refuses setns: the template's own filter allowed it."""
    import ctypes
    import struct

    program = b"".join(
        struct.pack("HBBI", *insn)
        for insn in (
            (0x20, 0, 0, 4),  # load the architecture
            (0x15, 0, 3, 0xC000003E),  # x86-64, else allow (the template's filter decides)
            (0x20, 0, 0, 0),  # load the system call number
            (0x15, 0, 1, 308),  # setns?
            (0x06, 0, 0, 0x00050000 | 1),  # fail it with EPERM
            (0x06, 0, 0, 0x7FFF0000),  # allow
        )
    )

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = Program(len(program) // 8, program)
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "installing the restored seccomp filter")


def _enter_jail(chan, libc):
    """In a copy of the template: asks the worker for its jail, enters it, gives up every
    privilege and forks twice so that the runtime is a child of the jail's init. Returns in the
    runtime's process with the environment the worker sent; the intermediate processes exit."""
    import ctypes

    chan.sendall(b"hello\n")
    data, fds = _receive(chan, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = chan.recv(1 << 20)
        if not more:
            os._exit(70)
        data += more
    message = json.loads(data)
    if len(fds) != 3:
        raise RuntimeError(f"{len(fds)} descriptors came with the jail, not 3")
    pidfd, out, err = fds
    if libc.setns(pidfd, _JAIL_NAMESPACES) != 0:
        raise OSError(ctypes.get_errno(), "entering the jail")
    os.close(pidfd)
    uid, gid = message["uid"], message["gid"]
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
    libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, CLEAR_ALL
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    # From root inside the namespace to another uid: the capabilities go too.
    os.setresuid(uid, uid, uid)
    _refuse_setns(libc)
    # Entering a pid namespace places one's children in it, not oneself.
    child = os.fork()
    if child:
        os.close(out)
        os.close(err)
        os.waitpid(child, 0)
        os._exit(0)
    if os.fork():
        os._exit(0)
    # The runtime: adopted by the jail's init once its parent exits.
    while os.getppid() != 1:
        time.sleep(0.0002)
    libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    os.setsid()
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    return message


def _rewrite_environ_block(env):
    """/proc/PID/environ shows the block of variables a process started with: in a copy, the
    template's (its init's credentials among them). Overwrites it with as many of `env`'s
    entries as fit, NULs after them. Nothing points into the block any more once every variable
    was unset and set again, as the copy does first."""
    import ctypes

    with open("/proc/self/stat", "rb") as f:
        # After the command's closing parenthesis, the fields from the third on: env_start and
        # env_end are the 50th and 51st.
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])
    if not 0 < end - start <= 1 << 20:
        return
    block = b""
    for key, value in env.items():
        entry = f"{key}={value}".encode() + b"\0"
        if len(block) + len(entry) > end - start:
            break
        block += entry
    ctypes.memmove(start, block.ljust(end - start, b"\0"), end - start)


def _rehearse():
    """Runs the runtime's own per-invocation code on made-up values, so that the pages it
    writes to are copied before the environment is claimed rather than during its first
    invocation (user code is not run)."""
    api = Api()
    api.buffer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: r\r\n"
        b"Lambda-Runtime-Deadline-Ms: 1\r\nContent-Length: 2\r\n\r\n{}"
    )
    lines = api._read_until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    api._read_exact(int(headers.get("content-length", "0")))
    context = Context("r", 1, "arn", {"custom": {}}, {"cognitoIdentityId": ""})
    context.get_remaining_time_in_millis()
    json.dumps(json.loads(b'{"a": [1, 2.5, "x", null, true]}')).encode()
    f"GET {RUNTIME}/invocation/next HTTP/1.1\r\nHost: {API}\r\nContent-Length: 0\r\n".encode("latin-1")


def serve_snapshot(api):
    """The template of a SnapStart version: initialised, it runs the before-snapshot hooks, then
    forks a copy of itself for every environment the worker restores; each copy enters a jail
    of its own, takes the environment's variables and credentials, re-seeds its random numbers,
    runs the after-restore hooks and serves invocations."""
    import ctypes
    import random
    import signal
    import socket
    import stat

    run_hooks(api, "before")
    libc = ctypes.CDLL(None, use_errno=True)
    # Every environment shares the template's pages until it writes to one. The collector
    # writes to every object it examines: what the init made is frozen out of its reach, so
    # that the first collection in an environment does not copy the whole heap.
    import gc

    gc.collect()
    gc.freeze()
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.connect("\0nimbus-snapshot")
    if api.sock is not None:
        api.sock.close()
        api.sock = None
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    control.sendall(b"ready\n")
    while True:
        data, fds = _receive(control, 16, 1)
        if not data:
            os._exit(0)  # the worker retired the snapshot
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork():
            os.close(fds[0])
            continue
        chan = None
        try:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            chan = socket.socket(fileno=fds[0])
            message = _enter_jail(chan, libc)
            # Connections made at init belong to the template's namespace: none survive. Each
            # is replaced by a socket whose peer has closed, not closed: the init's socket
            # objects still hold the numbers, and one reused by a new connection (the Runtime
            # API's) would carry their traffic. A client sees its connection ended, as if the
            # server had closed it, and makes a new one.
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd <= 2 or fd == chan.fileno():
                    continue
                try:
                    if stat.S_ISSOCK(os.fstat(fd).st_mode):
                        ended, peer = _socket.socketpair()
                        peer.close()
                        os.dup2(ended.fileno(), fd)
                        ended.close()
                except OSError:
                    pass
            os.chdir(os.environ.get("LAMBDA_TASK_ROOT", "/var/task"))
            chan.sendall(b"ok\n")
            # Copies the pages that taking its variables writes to now, while nobody waits for
            # it: the template's variables go out and back in the same way.
            warm = dict(os.environ)
            os.environ.clear()
            os.environ.update(json.loads(json.dumps({"env": warm}))["env"])
            random.seed()
            _rehearse()
            # The Runtime API's listener already waits in the jail: connect now, so that the
            # first request goes out as soon as the variables are in.
            try:
                api._connect()
            except OSError:
                api.sock = None
            # Confined; restored ahead of need, the copy waits here for its variables and
            # credentials (the worker closes the channel if it is never needed).
            data = b""
            while not data.endswith(b"\n"):
                more = chan.recv(1 << 20)
                if not more:
                    os._exit(0)
                data += more
            chan.close()
            os.environ.clear()
            os.environ.update(json.loads(data)["env"])
            _rewrite_environ_block(os.environ)
            random.seed()
            return
        except BaseException as exc:
            # The worker gives up on this environment and says why.
            try:
                chan.sendall(f"error {type(exc).__name__}: {exc}\n".encode())
            except Exception:
                pass
            os._exit(72)


def main():
    api = Api()
    handler = load_handler(api)
    if os.environ.get("_NIMBUS_SNAPSHOT") == "template":
        serve_snapshot(api)
        run_hooks(api, "after")
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
