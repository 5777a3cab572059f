"""A local Lambda: the real `Invoke` API on loopback, running functions the way Lambda runs them.

The worker's `LambdaSandbox` calls it with boto3 (`AWS_ENDPOINT_URL_LAMBDA`): `POST
/2015-03-31/functions/{name}/invocations`, `RequestResponse` (and `Event`), `X-Amz-Function-Error` when the
handler fails, 404 `ResourceNotFoundException`, and 429 `TooManyRequestsException` when every environment is
busy and the function's concurrency is reached (so the adapter's throttle path is real).

Each execution environment is its own process tree (devtools/sandbox_host.py `Container`):
- the runtime client (devtools/lambda_ric.py, standing in for awslambdaric) and the handler run in one process,
  as a uid of their own that is not the worker's, with the function's environment: the role's credentials
  (the same `AWS_*` variables as the stack), `AWS_LAMBDA_FUNCTION_NAME`, `AWS_LAMBDA_RUNTIME_API`...;
- a live Runtime API on loopback (`GET /2018-06-01/runtime/invocation/next`, `POST .../{id}/response` and
  `/error`, `POST .../init/error`), one per environment, through which the runtime client fetches each
  invocation and posts its answer: a post from user code is a real attack, recorded in `posts`;
- the code read-only to that uid, only /tmp writable (private to the environment), no user namespaces and
  no cgroups for it (bubblewrap is refused, as in Lambda), the platform's seccomp policy with the prctl options
  of `deny_prctl` refused (`CODERUNNER_EMULATE_DENY_PRCTL`);
- one invocation at a time; kept warm and reused (most recently used first); killed and replaced after a
  timeout (`Sandbox.Timedout`), a crash or running out of the function's memory (`Runtime.OutOfMemory`).
Not emulated: Lambda freezing an idle environment, its network (the VPC), its real seccomp policy (unknown:
`make verify-cloud` asks the real one), Firecracker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devtools.sandbox_host import SYSTEM_PYTHON, Container, Host, UidLease

log = logging.getLogger("coderunner.lambda_emulator")

ACCOUNT = "123456789012"
REGION = "us-east-1"
RUNTIME_PREFIX = "/2018-06-01/runtime/"
MAX_PAYLOAD = 6 * 1024 * 1024


@dataclass
class FunctionConfig:
    """One function: its handler in the image, limits, concurrency and environment."""

    name: str
    handler: str = "chalicelib.sandbox.lambda_entry.handle"
    timeout_s: float = 900
    memory_mb: int = 3008
    concurrency: int = 4  # reserved concurrency: environments at most, then 429
    environment: dict[str, str] = field(default_factory=dict)  # the role's credentials and the function's vars
    deny_prctl: list[str] = field(default_factory=list)
    uid_first: int = 64600
    uid_count: int = 50
    init_timeout_s: float = 60  # Lambda gives 10 s; a busy shared test machine needs more

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.name}"


@dataclass
class Invocation:
    request_id: str
    payload: bytes
    deadline: float  # epoch seconds
    done: threading.Event = field(default_factory=threading.Event)
    body: bytes = b""
    error: bool = False

    def answer(self, body: bytes, error: bool) -> bool:
        """Record the first answer; False if it was already answered."""
        if self.done.is_set():
            return False
        self.body, self.error = body, error
        self.done.set()
        return True


def _error_body(kind: str, message: str) -> bytes:
    return json.dumps({"errorType": kind, "errorMessage": message}).encode()


class Environment:
    """One execution environment: a container running the runtime client, and its Runtime API."""

    def __init__(self, function: FunctionConfig, host: Host, number: int) -> None:
        self.function, self.host, self.number = function, host, number
        self.lease = UidLease(function.uid_first, function.uid_count)
        name = f"lambda-{self.lease.uid}"
        self.container = Container(host, name, self.lease, function.memory_mb, function.deny_prctl)
        self.next: queue.Queue[Invocation | None] = queue.Queue()
        self.current: Invocation | None = None
        self.ready = threading.Event()  # the runtime client asked for its first invocation
        self.dead = threading.Event()
        self.invocations = 0
        self.posts: list[tuple[str, str, bool]] = []  # (request id, kind, accepted)
        self._kill_lock, self._api_closed = threading.Lock(), False
        self.api = ThreadingHTTPServer(("127.0.0.1", 0), _runtime_api(self))
        self.api.daemon_threads = True
        threading.Thread(target=self.api.serve_forever, name=f"runtime-api-{self.uid}", daemon=True).start()

    @property
    def uid(self) -> int:
        return self.lease.uid

    @property
    def runtime_api(self) -> str:
        return f"127.0.0.1:{self.api.server_address[1]}"

    def environment(self) -> dict[str, str]:
        f = self.function
        return {
            "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.host.code),
            "LAMBDA_RUNTIME_DIR": str(self.host.code / "_emulator"),
            "_HANDLER": f.handler,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EXECUTION_ENV": "AWS_Lambda_Image",
            "AWS_LAMBDA_FUNCTION_NAME": f.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(f.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{f.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"emulated/[$LATEST]{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_RUNTIME_API": self.runtime_api,
            **f.environment,
        }

    def start(self) -> bool:
        """Start the runtime client; True once it asks for its first invocation."""
        argv = [SYSTEM_PYTHON, "-I", str(self.host.code / "_emulator" / "ric.py")]
        proc = self.container.start(argv, self.environment(), str(self.host.code))
        threading.Thread(target=self._watch, args=(proc,), name=f"lambda-env-{self.uid}", daemon=True).start()
        deadline = time.monotonic() + self.function.init_timeout_s
        while not self.ready.wait(0.05):
            if self.dead.is_set() or time.monotonic() > deadline:
                log.error("environment %s failed to start:\n%s", self.uid, self.container.log_tail())
                self.kill()
                return False
        return True

    def _watch(self, proc: Any) -> None:
        code = proc.wait()
        self.dead.set()
        current = self.current
        if current is not None:
            if self.container.memory_hit():
                body = _error_body("Runtime.OutOfMemory", f"Runtime exited with error: {_how(code)}")
            else:
                body = _error_body("Runtime.ExitError", f"Runtime exited with error: {_how(code)}")
            current.answer(body, error=True)
        self.kill()

    def invoke(self, payload: bytes) -> Invocation:
        """Run one invocation to its end (answered, timed out, or the environment died)."""
        timeout = self.function.timeout_s
        invocation = Invocation(uuid.uuid4().hex, payload, time.time() + timeout)
        self.current = invocation
        self.invocations += 1
        self.next.put(invocation)
        if not invocation.done.wait(timeout):
            invocation.answer(_error_body("Sandbox.Timedout", f"Task timed out after {timeout:.2f} seconds"), True)
            self.kill()  # Lambda ends a timed-out environment's runtime: the next invocation starts a new one
        elif self.dead.is_set():
            self.kill()
        self.current = None
        return invocation

    def kill(self) -> None:
        """End the environment: its processes, its /tmp, its uid and its Runtime API (idempotent)."""
        self.dead.set()
        self.next.put(None)
        self.container.stop()
        with self._kill_lock:
            if self._api_closed:
                return
            self._api_closed = True
        with contextlib.suppress(Exception):
            self.api.shutdown()
            self.api.server_close()

    # -- the Runtime API, called by the runtime client (or by an attacker) --------------------------------

    def next_invocation(self) -> Invocation | None:
        self.ready.set()
        while not self.dead.is_set():
            with contextlib.suppress(queue.Empty):
                return self.next.get(timeout=1)
        return None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """A POST to the Runtime API: an invocation's response or error (the first for the current one wins),
        or the runtime's init error. Every post is recorded, accepted or not."""
        parts = path[len(RUNTIME_PREFIX) :].split("/") if path.startswith(RUNTIME_PREFIX) else []
        if parts == ["init", "error"]:
            log.error("environment %s failed to initialise: %s", self.uid, body[:500])
            self.dead.set()
            return 202, b'{"status":"OK"}'
        if len(parts) != 3 or parts[0] != "invocation" or parts[2] not in ("response", "error"):
            return 404, _error_body("NotFound", path)
        current = self.current
        accepted = current is not None and current.request_id == parts[1] and current.answer(body, parts[2] == "error")
        self.posts.append((parts[1], parts[2], accepted))
        if accepted:
            return 202, b'{"status":"OK"}'
        return 400, _error_body("InvalidStateTransition", "not the current invocation")


def _how(code: int) -> str:
    return f"signal: {-code}" if code < 0 else f"exit status {code}"


def _runtime_api(env: Environment) -> type[BaseHTTPRequestHandler]:
    class RuntimeApi(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the http.server interface
            if self.path != RUNTIME_PREFIX + "invocation/next":
                self._reply(404, _error_body("NotFound", self.path))
                return
            invocation = env.next_invocation()
            if invocation is None:
                self._reply(500, _error_body("Runtime.Shutdown", "the environment is shutting down"))
                return
            headers = {
                "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(invocation.deadline * 1000)),
                "Lambda-Runtime-Invoked-Function-Arn": env.function.arn,
                "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
            }
            self._reply(200, invocation.payload, headers)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._reply(*env.post(self.path, body))

    return RuntimeApi


class Function:
    """A function's environments: idle ones are reused (most recent first), at most `concurrency` exist."""

    def __init__(self, config: FunctionConfig, host: Host) -> None:
        self.config, self.host = config, host
        self.lock = threading.Lock()
        self.idle: list[Environment] = []
        self.busy = 0
        self.started = 0
        self.environments: list[Environment] = []  # every environment ever started (tests read their stats)

    def acquire(self) -> Environment | None:
        """An idle environment, or a new one; None when `concurrency` are busy (throttled)."""
        with self.lock:
            while self.idle:
                env = self.idle.pop()
                if not env.dead.is_set():
                    self.busy += 1
                    return env
            if self.busy >= self.config.concurrency:
                return None
            self.busy += 1
            self.started += 1
            number = self.started
        env = Environment(self.config, self.host, number)
        self.environments.append(env)
        if env.start():
            return env
        self.release(env)
        raise RuntimeError(f"the execution environment could not start:\n{env.container.log_tail()}")

    def release(self, env: Environment) -> None:
        with self.lock:
            self.busy -= 1
            if not env.dead.is_set():
                self.idle.append(env)

    def stop(self) -> None:
        with self.lock:
            envs, self.idle = list(self.environments), []
        for env in envs:
            env.kill()


class LambdaEmulator:
    """The Invoke API on 127.0.0.1 for the given functions. `start()` returns its endpoint URL."""

    def __init__(self, functions: list[FunctionConfig], host: Host | None = None) -> None:
        self.host = host or Host()
        self._own_host = host is None
        self.functions = {f.name: Function(f, self.host) for f in functions}
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _invoke_api(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="lambda-invoke-api", daemon=True).start()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def function(self, name_or_arn: str) -> Function | None:
        name = name_or_arn.split(":function:", 1)[-1].split(":", 1)[0]
        return self.functions.get(name)

    def invoke(self, name: str, payload: bytes) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) of one synchronous invocation, as the Invoke API answers it."""
        function = self.function(name)
        if function is None:
            return _aws_error(404, "ResourceNotFoundException", f"Function not found: {name}")
        if len(payload) > MAX_PAYLOAD:
            return _aws_error(413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes")
        try:
            env = function.acquire()
        except RuntimeError as exc:
            body = _error_body("Runtime.ExitError", str(exc)[-1000:])
            return 200, body, {"X-Amz-Function-Error": "Unhandled", "X-Amz-Executed-Version": "$LATEST"}
        if env is None:
            reason = "ReservedFunctionConcurrentInvocationLimitExceeded"
            return _aws_error(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason)
        try:
            invocation = env.invoke(payload)
        finally:
            function.release(env)
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if invocation.error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        return 200, invocation.body, headers

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        for function in self.functions.values():
            function.stop()
        if self._own_host:
            self.host.close()


def _aws_error(status: int, code: str, message: str, **extra: str) -> tuple[int, bytes, dict[str, str]]:
    body = json.dumps({"Type": "User", "message": message, **extra}).encode()
    return status, body, {"x-amzn-ErrorType": code}


def _invoke_api(emulator: LambdaEmulator) -> type[BaseHTTPRequestHandler]:
    class InvokeApi(BaseHTTPRequestHandler):
        def log_message(self, *_: Any) -> None:
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - the http.server interface
            from urllib.parse import unquote

            parts = self.path.split("?", 1)[0].split("/")
            if len(parts) != 5 or parts[1:3] != ["2015-03-31", "functions"] or parts[4] != "invocations":
                self._reply(*_aws_error(404, "UnknownOperationException", f"no such operation: {self.path}"))
                return
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            name = unquote(parts[3])
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if kind == "DryRun":
                found = emulator.function(name) is not None
                self._reply(*((204, b"", {}) if found else _aws_error(404, "ResourceNotFoundException", name)))
            elif kind == "Event":
                threading.Thread(target=emulator.invoke, args=(name, payload), daemon=True).start()
                self._reply(202, b"", {})
            else:
                self._reply(*emulator.invoke(name, payload))

    return InvokeApi
