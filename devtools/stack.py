"""`make dev`: the whole platform on this machine.

An embedded moto server on 127.0.0.1 holds the queues and tables (created from infra/resources.json), the
API listens on 127.0.0.1:$PORT (8000), worker loops run in their own process (restarted if it dies), and a
scheduler runs the cleanup. State lives as long as this process.

Knobs (environment), so tests and benchmarks can run their own stacks beside a developer's:
PORT, MOTO_PORT, CODERUNNER_STAGE, CODERUNNER_WORKER_PROCESSES, CODERUNNER_REAP_EVERY_S,
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
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("coderunner.stack")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dev_file(variable: str, default_name: str) -> Path:
    """Where the stack writes one of its files: `$variable` if set, else `.dev/<default_name>`."""
    return Path(os.environ.get(variable) or ROOT / ".dev" / default_name)


def local_environment(moto_port: int) -> dict[str, str]:
    """Fake credentials and the local endpoint: nothing here can reach real AWS. The tests plant a secret of
    their own with CODERUNNER_LOCAL_SECRET_ACCESS_KEY, to show that no job ever sees the stack's credentials."""
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
    }


class Stack:
    """Starts and stops the pieces; `ready` is set once the API answers."""

    def __init__(self, port: int, moto_port: int, workers: int = 1, reap_every_s: float = 10.0) -> None:
        self.port, self.moto_port, self.n_workers, self.reap_every_s = port, moto_port, workers, reap_every_s
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.workers: list[subprocess.Popen[bytes]] = []
        self._servers: list[Any] = []
        self.emulators: Any = None

    def start(self) -> dict[str, str]:
        os.environ.update(local_environment(self.moto_port))
        from devtools.motoserver import start_moto

        self._servers.append(start_moto(self.moto_port))
        from chalicelib.bootstrap import reset
        from devtools.resources import create_resources

        reset()
        create_resources(
            os.environ["CODERUNNER_STAGE"],
            {"VisibilityTimeout": int(os.environ.get("CODERUNNER_VISIBILITY_TIMEOUT", "30"))},
        )
        self._start_cloud_sandboxes()
        keys = self._make_keys()
        for _ in range(self.n_workers):
            self.workers.append(self._spawn_worker())
        threading.Thread(target=self._supervise, name="supervisor", daemon=True).start()
        threading.Thread(target=self._schedule, name="scheduler", daemon=True).start()
        threading.Thread(target=self._serve_api, name="api", daemon=True).start()
        self._wait_for_api()
        return keys

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

        env = local_environment(self.moto_port)
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
            "stage": os.environ["CODERUNNER_STAGE"],
            "environment": local_environment(self.moto_port),
            "lambda_endpoint": os.environ.get("AWS_ENDPOINT_URL_LAMBDA"),
        }

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "devtools.worker"], cwd=ROOT, env=dict(os.environ))

    def _supervise(self) -> None:
        """Restart a worker process that died (the chaos test kills them on purpose)."""
        while not self.stop.wait(0.5):
            for i, proc in enumerate(self.workers):
                if proc.poll() is not None and not self.stop.is_set():
                    log.warning("worker %s exited with %s; restarting", proc.pid, proc.returncode)
                    self.workers[i] = self._spawn_worker()

    def _schedule(self) -> None:
        from chalicelib.bootstrap import get_deps
        from chalicelib.services.reaper import reap

        while not self.stop.wait(self.reap_every_s):
            try:
                reap(get_deps())
            except Exception:  # noqa: BLE001 - the scheduler keeps going; the next pass retries
                log.exception("cleanup pass failed")

    def _serve_api(self) -> None:
        try:
            self._run_api()
        except Exception:
            log.exception("the API failed to start")
            self.stop.set()

    def _run_api(self) -> None:
        from chalice.config import Config
        from chalice.local import create_local_server

        sys.path.insert(0, str(ROOT))
        from app import app

        # Importing the app hands Powertools' INFO level to every registered logger, werkzeug's too, which
        # would log each request the workers make to moto. Quiet it again.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        config = Config.create(chalice_stage=os.environ["CODERUNNER_STAGE"], app_name="code-runner")
        server = create_local_server(app, config, "127.0.0.1", self.port)
        self._servers.append(server)
        server.serve_forever()

    def _wait_for_api(self, timeout: float = 30) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1):
                    self.ready.set()
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def shutdown(self) -> None:
        self.stop.set()
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.emulators is not None:
            self.emulators.stop()
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):  # best effort on the way out
                server.shutdown() if hasattr(server, "shutdown") else server.stop()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    port = int(os.environ.get("PORT", "8000"))
    moto_port = int(os.environ.get("MOTO_PORT") or free_port())
    stack = Stack(
        port,
        moto_port,
        workers=int(os.environ.get("CODERUNNER_WORKER_PROCESSES", "1")),
        reap_every_s=float(os.environ.get("CODERUNNER_REAP_EVERY_S", "10")),
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    keys = stack.start()
    stack_file = dev_file("CODERUNNER_STACK_FILE", "stack.json")
    _write_json(stack_file, stack.describe())
    print(f"\ncode-runner is up: API http://127.0.0.1:{port}  (moto on 127.0.0.1:{moto_port})", flush=True)
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
    while not stopping.wait(0.5):
        pass
    print("stopping...", flush=True)
    stack.shutdown()
    with contextlib.suppress(OSError, ValueError):  # another stack may have taken the file over since
        if json.loads(stack_file.read_text()).get("pid") == os.getpid():
            stack_file.unlink()


if __name__ == "__main__":
    main()
