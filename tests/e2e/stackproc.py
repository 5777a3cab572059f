"""The local stack (`python -m devtools.stack`) as a subprocess, and a small HTTP client for it.

Shared by the e2e fixtures, `make chaos` and `make bench`. Each stack gets free ports, its own stage and a
scratch directory for its keys file, stack file, run log and output, so it never touches a developer's
`.dev/` nor another stack's tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from devtools.stack import ROOT, free_port, local_environment

# Fast cleanup for tests: a dead worker's job is retried about `lease grace + reap interval` after its
# deadline; a crashed worker's message comes back after the visibility timeout.
TEST_SETTINGS = {
    "CODERUNNER_REAP_EVERY_S": "1",
    "CODERUNNER_LEASE_GRACE_S": "3",
    "CODERUNNER_VISIBILITY_TIMEOUT": "30",
    "CODERUNNER_IP_PER_MINUTE": "100000",  # every local request comes from 127.0.0.1
}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def error_code(self) -> str | None:
        return (self.body or {}).get("error", {}).get("code") if isinstance(self.body, dict) else None


class Api:
    """A user of the HTTP API: one key, JSON in and out, no retries."""

    def __init__(self, base_url: str, key: str | None = None, timeout: float = 30) -> None:
        self.base_url, self.key, self.timeout = base_url.rstrip("/"), key, timeout

    def with_key(self, key: str | None) -> Api:
        return Api(self.base_url, key, self.timeout)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Response:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.key is not None:
            request.add_header("Authorization", f"Bearer {self.key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return _response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return _response(exc.code, dict(exc.headers), exc.read())

    def submit(self, job: dict[str, Any]) -> Response:
        return self.call("POST", "/v1/jobs", job)

    def submit_ok(self, job: dict[str, Any]) -> str:
        """Submit `job`, insist on 202, return its id."""
        resp = self.submit(job)
        assert resp.status == 202, (resp.status, resp.body)
        return str(resp.body["id"])

    def wait(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        """Long-poll until the job is terminal; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            resp = self.call("GET", f"/v1/jobs/{job_id}?wait={max(0, min(20, int(left)))}")
            assert resp.status == 200, (resp.status, resp.body)
            if resp.body["status"] not in ("queued", "running"):
                return dict(resp.body)
            assert time.monotonic() < deadline, f"job {job_id} still {resp.body['status']} after {timeout} s"


def _response(status: int, headers: dict[str, str], raw: bytes) -> Response:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return Response(status, {k.lower(): v for k, v in headers.items()}, body)


def timestamp(iso: str | None) -> float:
    """An API timestamp ("2026-01-02T03:04:05.678Z") as epoch seconds."""
    assert iso is not None
    return datetime.fromisoformat(iso).timestamp()


@dataclass
class StackProcess:
    """A running stack: where it listens, its keys, and how to reach its tables directly."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    stage: str
    port: int
    moto_port: int
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)  # service -> its moto process (from the stack file)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def moto_endpoint(self) -> str:
        """The catch-all moto server (services without a process of their own)."""
        return f"http://127.0.0.1:{self.moto_port}"

    def endpoint(self, service: str) -> str:
        return self.endpoints.get(service, self.moto_endpoint)

    @property
    def run_log(self) -> Path:
        return self.workdir / "runs.log"

    @property
    def output(self) -> Path:
        return self.workdir / "stack.out"

    def api(self, key: str | None = None) -> Api:
        return Api(self.base_url, key)

    def tail(self, lines: int = 40) -> str:
        """The end of the stack's output (for failure messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def client(self, service: str) -> Any:
        """A boto3 client on this stack's moto server for `service` (fake credentials; the process env is left
        alone)."""
        import boto3

        env = local_environment(self.moto_port)
        return boto3.session.Session().client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint(service),
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=env["AWS_SESSION_TOKEN"],
        )

    def table(self, name: str) -> str:
        return f"code-runner-{self.stage}-{name}"

    def make_key(self, tier: str, owner: str | None = None) -> str:
        """A new API key in `tier` (an owner of its own unless given), created straight in the keys table."""
        from chalicelib.adapters.keys_dynamodb import DynamoKeyStore
        from chalicelib.config import settings_from_env
        from chalicelib.services.deps import Deps
        from chalicelib.services.keys import create_key

        settings = settings_from_env(self.env)
        store = DynamoKeyStore(settings.table("keys"), settings.tiers, client=self.client("dynamodb"))
        deps = Deps(settings=settings, jobs=None, keys=store, counters=None, queue=None)  # type: ignore[arg-type]
        return create_key(deps, owner or f"{tier}-{uuid.uuid4().hex[:8]}", tier)[0]

    def scan(self, table: str) -> list[dict[str, Any]]:
        """Every item of one of the stack's tables ("jobs", "keys", "counters"), as plain Python values."""
        from chalicelib.adapters.dynamo import unmarshal

        ddb, items, start = self.client("dynamodb"), [], None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.table(table), "ConsistentRead": True}
            if start:
                kwargs["ExclusiveStartKey"] = start
            resp = ddb.scan(**kwargs)
            items += [unmarshal(i) or {} for i in resp.get("Items", [])]
            start = resp.get("LastEvaluatedKey")
            if not start:
                return items

    def worker_pids(self) -> list[int]:
        """The worker processes the stack runs now (its children)."""
        return [pid for pid in children(self.proc.pid) if b"devtools.worker" in cmdline(pid)]

    def stop(self, timeout: float = 45) -> int | None:
        """SIGTERM and wait; then SIGKILL the stack and whatever is left of its process group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError):  # workers orphaned by a killed stack
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def cmdline(pid: int) -> bytes:
    """A process's command line (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def start_stack(
    workdir: Path, *, workers: int = 1, settings: dict[str, str] | None = None, timeout: float = 180
) -> StackProcess:
    """Start a stack in its own process group and wait for READY (its workers polling: importing the app takes
    a worker a minute on a loaded machine); RuntimeError (with its output) if not."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, moto_port = free_port(), free_port()
    stage = "e2e" + uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        "PORT": str(port),
        "MOTO_PORT": str(moto_port),
        "CODERUNNER_STAGE": stage,
        "CODERUNNER_WORKER_PROCESSES": str(workers),
        "CODERUNNER_KEYS_FILE": str(workdir / "keys.json"),
        "CODERUNNER_STACK_FILE": str(workdir / "stack.json"),
        "CODERUNNER_RUN_LOG": str(workdir / "runs.log"),
        **TEST_SETTINGS,
        **(settings or {}),
    }
    for name in [n for n in env if n.startswith("AWS_ENDPOINT_URL")]:
        env.pop(name)
    out = open(workdir / "stack.out", "wb")  # noqa: SIM115 - the child keeps writing after we return
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.stack"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: a failed stop can still kill the workers with it
    )
    out.close()
    stack = StackProcess(proc, workdir, stage, port, moto_port, env)
    try:
        _wait_ready(stack, timeout)
    except BaseException:
        stack.stop(5)
        raise
    stack.keys = json.loads((workdir / "keys.json").read_text())
    stack.endpoints = json.loads((workdir / "stack.json").read_text()).get("endpoints", {})
    return stack


def _wait_ready(stack: StackProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise RuntimeError(f"the stack exited with {stack.proc.returncode}:\n{stack.tail()}")
        with contextlib.suppress(OSError):
            if any(line.strip() == b"READY" for line in stack.output.read_bytes().splitlines()):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the stack was not READY after {timeout} s:\n{stack.tail()}")
