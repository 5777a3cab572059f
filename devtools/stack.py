"""`make dev`: the whole platform on this machine, in processes that use every core.

- moto: DynamoDB and SQS each served from their own moto backend app in a process of their own (on free
  ports; boto3 reaches them through AWS_ENDPOINT_URL_DYNAMODB / _SQS), plus a catch-all moto server in this
  process on $MOTO_PORT (AWS_ENDPOINT_URL) for any other service, so no client can ever reach real AWS.
  Queues and tables are created from infra/state.py, as the template declares them.
- the API on 127.0.0.1:$PORT (8000): `python -m devtools.api`, Chalice's local handling on a threaded server;
- worker loops in two processes (`python -m devtools.worker`; CODERUNNER_WORKER_PROCESSES), each restarted
  if it dies;
- the scheduler (cleanup every 10 s) and the supervision in this process.
The API and the workers announce job changes to each other over Unix datagrams in a scratch directory
(CODERUNNER_SIGNAL_DIR): a finished job wakes its waiting `GET ?wait`, a cancel reaches the running job.
- the WebSocket channel (chalice local has none), in this process: the app's own handlers behind a local
  server, with API Gateway's management API for posting to connections (WS_PORT fixes its port).
State lives as long as this process; Ctrl-C stops everything.

Knobs (environment), so tests and benchmarks can run their own stacks beside a developer's:
PORT, MOTO_PORT, WS_PORT (the WebSocket channel; a free port by default), CODERUNNER_STAGE,
CODERUNNER_WORKER_PROCESSES, CODERUNNER_REAP_EVERY_S,
CODERUNNER_VISIBILITY_TIMEOUT, CODERUNNER_KEYS_FILE (default .dev/keys.json) and CODERUNNER_STACK_FILE
(default .dev/stack.json: endpoints and environment, read by `coderunner --local`). Every CODERUNNER_*
setting of chalicelib/config.py (lease grace, per-IP limit, run log, ...) reaches the API and the workers.

As root, the stack also runs the Lambda and Fargate emulators (devtools/sandbox_emulators.py), so jobs may
ask for `"sandbox": "lambda"` or `"fargate"`; CODERUNNER_EMULATE_DENY_PRCTL makes them refuse prctl options,
CODERUNNER_EMULATE_LAMBDA_CONCURRENCY sets the function's concurrency (8).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devtools import logs

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("coderunner.stack")
SERVICES = ("dynamodb", "sqs")  # what the platform uses locally: each gets a moto process of its own


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dev_file(variable: str, default_name: str) -> Path:
    """Where the stack writes one of its files: `$variable` if set, else `.dev/<default_name>`."""
    return Path(os.environ.get(variable) or ROOT / ".dev" / default_name)


def local_environment(moto_port: int, service_ports: dict[str, int] | None = None) -> dict[str, str]:
    """Fake credentials and the local endpoints (one per service given, the catch-all for any other, S3's
    results bucket included): nothing here can reach real AWS. The tests plant a secret of their own with
    CODERUNNER_LOCAL_SECRET_ACCESS_KEY, to show that no job ever sees the stack's credentials."""
    from devtools.resources import results_bucket

    endpoints = {f"AWS_ENDPOINT_URL_{s.upper()}": f"http://127.0.0.1:{p}" for s, p in (service_ports or {}).items()}
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": os.environ.get("CODERUNNER_LOCAL_SECRET_ACCESS_KEY", "testing"),
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "code-runner",
        "CODERUNNER_STAGE": os.environ.get("CODERUNNER_STAGE", "dev"),
        "CODERUNNER_SANDBOX_MODE": "local",
        "CODERUNNER_RESULTS_BUCKET": results_bucket(os.environ.get("CODERUNNER_STAGE", "dev")),
        # Webhooks to this machine (http or https to loopback), so that tests and users can receive them.
        "CODERUNNER_WEBHOOK_ALLOW_LOOPBACK": os.environ.get("CODERUNNER_WEBHOOK_ALLOW_LOOPBACK", "true"),
        **endpoints,
    }


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; RuntimeError if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{_name(proc)} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s ({_name(proc)})")


def _name(proc: subprocess.Popen[bytes]) -> str:
    return " ".join(str(arg) for arg in proc.args[2:]) if isinstance(proc.args, list) else str(proc.args)


class Stack:
    """Starts and stops the pieces; `ready` is set once the API answers, `failed` if a piece died."""

    def __init__(self, port: int, moto_port: int, workers: int = 1, reap_every_s: float = 10.0) -> None:
        self.port, self.moto_port, self.n_workers, self.reap_every_s = port, moto_port, workers, reap_every_s
        self.service_ports = {service: free_port() for service in SERVICES}
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.failed = threading.Event()
        self.workers: list[subprocess.Popen[bytes]] = []
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.api: subprocess.Popen[bytes] | None = None
        self.signal_dir = tempfile.mkdtemp(prefix="coderunner-signals-")
        self._servers: list[Any] = []
        self.ws_url = ""
        self.emulators: Any = None

    def environment(self) -> dict[str, str]:
        return local_environment(self.moto_port, self.service_ports)

    def start(self) -> dict[str, str]:
        os.environ.update({**self.environment(), "CODERUNNER_SIGNAL_DIR": self.signal_dir})
        self._bind_websockets()  # before any child starts: they learn its URLs from the environment
        for service, port in self.service_ports.items():
            self.services[service] = self._spawn("devtools.motoserver", service, str(port))
        from devtools.motoserver import start_moto

        self._servers.append(start_moto(self.moto_port))
        self._start_cloud_sandboxes()  # before the API and the workers start: they learn the settings
        self.api = self._spawn("devtools.api", str(self.port))
        for service, port in self.service_ports.items():
            wait_for_port(port, self.services[service])
        from chalicelib.bootstrap import reset
        from devtools.resources import create_resources

        reset()
        create_resources(
            os.environ["CODERUNNER_STAGE"],
            {"VisibilityTimeout": int(os.environ.get("CODERUNNER_VISIBILITY_TIMEOUT", "30"))},
        )
        keys = self._make_keys()
        for _ in range(self.n_workers):
            self.workers.append(self._spawn("devtools.worker"))
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        threading.Thread(target=self._schedule, name="scheduler", daemon=True).start()
        self._wait_for_api()
        self._wait_for_workers()
        return keys

    def _bind_websockets(self) -> None:
        """The WebSocket channel (chalice local has none): the app's own handlers behind a local server, whose
        management API the workers post to (their environment names it). The app is imported on the first
        connection, so binding costs nothing at start."""
        from devtools.wsserver import LocalWebSocketApi

        def handler(name: str) -> Any:
            def call(event: dict[str, Any], context: Any) -> Any:
                sys.path.insert(0, str(ROOT))
                import app as app_module

                return getattr(app_module, name)(event, context)

            return call

        ws = LocalWebSocketApi(
            handler("websocket_connect"),
            handler("websocket_message"),
            handler("websocket_disconnect"),
            port=int(os.environ.get("WS_PORT") or 0),
        )
        ws.start()
        self._servers.append(ws)
        self.ws_url = ws.url
        os.environ["CODERUNNER_WS_URL"] = ws.url
        os.environ["CODERUNNER_WS_MANAGEMENT_URL"] = ws.management_url

    def _start_cloud_sandboxes(self) -> None:
        """The Lambda and Fargate emulators (devtools/sandbox_emulators.py): `"sandbox": "lambda"` and
        `"fargate"` then run through the cloud's adapters. Their settings reach the API and the workers."""
        import boto3

        from chalicelib.bootstrap import reset
        from devtools.sandbox_emulators import start_emulators

        def deliver(event: dict[str, Any]) -> Any:
            import app
            from devtools.sandbox_emulators import app_rule_target

            return app_rule_target(app)(event)

        def client(service: str) -> Any:
            return boto3.client(service)  # type: ignore[call-overload]

        env = self.environment()
        self.emulators = start_emulators(os.environ["CODERUNNER_STAGE"], client, deliver, env)
        if self.emulators is not None:
            os.environ.update(self.emulators.environment)
            reset()

    def _make_keys(self) -> dict[str, str]:
        from chalicelib.bootstrap import get_deps
        from chalicelib.services.keys import create_key

        deps = get_deps()
        keys = {tier: create_key(deps, f"dev-{tier}", tier)[0] for tier in deps.settings.tiers}
        _write_json(dev_file("CODERUNNER_KEYS_FILE", "keys.json"), keys)
        return keys

    def describe(self) -> dict[str, Any]:
        """What a client or the operator CLI needs to reach this stack (written to the stack file)."""
        return {
            "pid": os.getpid(),
            "api": f"http://127.0.0.1:{self.port}",
            "moto_endpoint": f"http://127.0.0.1:{self.moto_port}",
            "websocket": self.ws_url,
            "endpoints": {service: f"http://127.0.0.1:{port}" for service, port in self.service_ports.items()},
            "stage": os.environ["CODERUNNER_STAGE"],
            "environment": self.environment(),
            "lambda_endpoint": os.environ.get("AWS_ENDPOINT_URL_LAMBDA"),
        }

    def _spawn(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=dict(os.environ))

    def _supervise(self) -> None:
        """Restart a worker process that died (the chaos test kills them on purpose); a dead API or moto
        process fails the stack (moto's state is gone with it)."""
        while not self.stop.wait(0.5):
            for i, proc in enumerate(self.workers):
                if proc.poll() is not None and not self.stop.is_set():
                    log.warning("worker %s exited with %s; restarting", proc.pid, proc.returncode)
                    self.workers[i] = self._spawn("devtools.worker")
            for piece in [self.api, *self.services.values()]:
                if piece is not None and piece.poll() is not None and not self.stop.is_set():
                    log.error("%s exited with %s; stopping the stack", _name(piece), piece.returncode)
                    self.failed.set()
                    return

    def _schedule(self) -> None:
        from chalicelib.bootstrap import get_deps
        from chalicelib.services.reaper import reap

        while not self.stop.wait(self.reap_every_s):
            try:
                reap(get_deps())
            except Exception:  # noqa: BLE001 - the scheduler keeps going; the next pass retries
                log.exception("cleanup pass failed")

    def _wait_for_api(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            if self.api is None or self.api.poll() is not None:
                raise RuntimeError("the API process exited")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    self.ready.set()
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def _wait_for_workers(self, timeout: float = 120) -> None:
        """Until every worker process polls its queues (a worker imports the app for seconds on a busy machine:
        READY must not mean that the first jobs wait for that, or compete with it for the CPU)."""
        from devtools.worker import READY_SUFFIX

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set() and not self.failed.is_set():
            ready = {name for name in os.listdir(self.signal_dir) if name.endswith(READY_SUFFIX)}
            if len(ready) >= self.n_workers:
                return
            time.sleep(0.1)
        raise RuntimeError("the worker processes did not start polling")

    def shutdown(self) -> None:
        """The API first (no new work), then the workers (they finish their runs), then moto."""
        self.stop.set()
        _terminate([self.api] if self.api else [])
        _terminate(self.workers)
        if self.emulators is not None:
            self.emulators.stop()
        _terminate(list(self.services.values()))
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):  # best effort on the way out
                server.stop()
        shutil.rmtree(self.signal_dir, ignore_errors=True)


def _terminate(procs: list[subprocess.Popen[bytes]], timeout: float = 10) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    logs.configure("stack")
    port = int(os.environ.get("PORT", "8000"))
    moto_port = int(os.environ.get("MOTO_PORT") or free_port())
    stack = Stack(
        port,
        moto_port,
        workers=int(os.environ.get("CODERUNNER_WORKER_PROCESSES", "2")),
        reap_every_s=float(os.environ.get("CODERUNNER_REAP_EVERY_S", "10")),
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        keys = stack.start()
    except BaseException:
        stack.shutdown()
        raise
    stack_file = dev_file("CODERUNNER_STACK_FILE", "stack.json")
    _write_json(stack_file, stack.describe())
    services = ", ".join(f"{name} :{service_port}" for name, service_port in stack.service_ports.items())
    print(f"\ncode-runner is up: API http://127.0.0.1:{port}  (moto: {services}, others :{moto_port})", flush=True)
    print(f"  WebSocket channel: {stack.ws_url}/?device=<name> (Authorization: Bearer <key>)", flush=True)
    for tier, key in keys.items():
        print(f"  {tier:<10} key: {key}", flush=True)
    print(f"  keys written to {dev_file('CODERUNNER_KEYS_FILE', 'keys.json')}", flush=True)
    print(
        f"\n  curl -H 'Authorization: Bearer {keys['free']}' -d "
        f'\'{{"runtime":"python","source":"print(input()*2)","stdin":"ab"}}\' 127.0.0.1:{port}/v1/jobs\n'
        "  State lives as long as this process. Ctrl-C stops everything.\n",
        flush=True,
    )
    print("READY", flush=True)
    while not stopping.wait(0.5) and not stack.failed.is_set():
        pass
    print("stopping...", flush=True)
    stack.shutdown()
    with contextlib.suppress(OSError, ValueError):  # another stack may have taken the file over since
        if json.loads(stack_file.read_text()).get("pid") == os.getpid():
            stack_file.unlink()
    if stack.failed.is_set():
        raise SystemExit(1)


if __name__ == "__main__":
    main()
