"""Fixtures for the sandbox tests: the two isolations (full local, Lambda-like) and cleanliness checks."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Until pytest's `pythonpath` names the repo root, make `chalicelib` importable when pytest is run directly.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from chalicelib.sandbox import hostclean, kernel  # noqa: E402
from chalicelib.sandbox.local import Isolation, IsolationSettings  # noqa: E402
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxLimits, SourceFile  # noqa: E402
from chalicelib.sandbox.pool import PreparedSandbox, SandboxPool  # noqa: E402
from chalicelib.sandbox.runner import execute  # noqa: E402
from chalicelib.sandbox.selection import memory_class  # noqa: E402

SMALL = SandboxLimits(wall_time_s=2, cpu_time_s=1, memory_mb=128, output_kb=16, processes=16)
ENTRY = {"python3": "main.py", "node": "main.js", "bash": "main.sh"}
UID_BASE = 64500  # away from the worker's default slot uids, so a running dev stack is not disturbed
SLOTS = 4  # each isolation's pool holds one, and a pool never takes the last free slot
LAMBDA_SLOT = 64590  # the Lambda handler's one slot in these tests (a local stack's pools hold 64000 and up)
POOL_WAIT_S = 10  # a test's run waits this long for a prepared sandbox, then starts one itself
TEARDOWN_WAIT_S = 60  # the host check waits at most this long for a pool's teardowns (drain waited for ever)

Runner = Callable[..., ExecutionResult]


_ISOLATIONS: list[Isolation] = []  # every isolation of the session: their pools share the slots


def _isolation(settings: IsolationSettings) -> Isolation:
    iso = Isolation(settings)
    _ISOLATIONS.append(iso)
    return iso


def _settings(tmp_root: str, **overrides: object) -> IsolationSettings:
    base: dict[str, object] = {
        "slots": SLOTS,
        "slot_uid_base": UID_BASE,
        "work_root": os.path.join(tmp_root, "work"),
        "cgroup_name": "code-runner-tests",
        "pool_size": 1,  # every run takes a prepared sandbox when there is one (the attack suite with the pool on)
    }
    return IsolationSettings.model_validate(base | overrides)


@pytest.fixture(scope="session")
def sandbox_root() -> Iterator[str]:
    # Not under pytest's tmp_path: its parents are 0700 and slot uids must traverse to their work dir.
    root = tempfile.mkdtemp(prefix="code-runner-sandbox-tests-")
    os.chmod(root, 0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def full_isolation(sandbox_root: str) -> Isolation:
    iso = _isolation(_settings(sandbox_root))
    layers = iso.layers()
    if os.geteuid() != 0 or not layers["bwrap"]:
        pytest.skip(f"full local isolation needs root and bubblewrap here: {layers}")
    return iso


@pytest.fixture(scope="session")
def lambda_like_isolation(sandbox_root: str) -> Isolation:
    """What the Lambda sandbox has: no bubblewrap, no cgroups; rlimits, uid (when root), env, seccomp.

    The network layer is our seccomp filter and nothing else (no platform trusted to cut it).
    """
    iso = _isolation(_settings(sandbox_root, use_bwrap=False, use_cgroups=False))
    layers = iso.layers()
    if not layers["seccomp"]:
        pytest.skip(f"this kernel does not let us load a seccomp filter: {layers}")
    assert layers["network"] == "seccomp"
    return iso


@pytest.fixture(params=["full", "lambda_like"])
def isolation(request: pytest.FixtureRequest) -> Isolation:
    """Every attack runs under both isolations."""
    name = "full_isolation" if request.param == "full" else "lambda_like_isolation"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def run_code(
    iso: Isolation,
    runtime: str,
    code: str,
    stdin: str = "",
    limits: SandboxLimits = SMALL,
    cancel: threading.Event | None = None,
    **kw: object,
) -> ExecutionResult:
    """Run one program with the test limits; `kw` goes to the request (e.g. tests=...).

    With a pool, it waits (bounded) for a prepared sandbox first, so the run takes one rather than
    racing the refill; if other sandbox tests on the host hold the slots, it starts one itself.
    """
    if iso.pool is not None:
        iso.pool.wait_filled(POOL_WAIT_S)
    request = ExecutionRequest(
        job_id="test-job",
        runtime=runtime,
        files=[SourceFile(path=ENTRY[runtime], content=code)],
        stdin=stdin,
        limits=limits,
        **kw,  # type: ignore[arg-type]
    )
    return execute(request, isolation=iso, cancel=cancel)


def loopback_listeners() -> list[socket.socket]:
    """A real listening socket on 127.0.0.1 and on ::1 (non-blocking), for jobs to fail to reach."""
    opened = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family, socket.SOCK_STREAM)
        server.bind((host, 0))
        server.listen()
        server.setblocking(False)
        opened.append(server)
    return opened


def _hold_still(pool: SandboxPool, stack: contextlib.ExitStack, timeout_s: float) -> list[PreparedSandbox] | None:
    """Hold `pool` still (its lock, until `stack` closes) once its background thread has torn down every used
    sandbox and has nothing under way: its idle prepared sandboxes, each ready; None if one is not.

    Holding the lock keeps the thread from tearing down or preparing anything while the host is inspected.
    (SandboxPool has no public "wait until nothing is under way": `drain` waits for the same, then destroys
    the prepared sandboxes, which the next run then waits to have prepared again.)
    """
    cond = pool._cond
    stack.enter_context(cond)
    if not cond.wait_for(lambda: not pool._retired and not pool._busy, timeout=TEARDOWN_WAIT_S):
        raise AssertionError(f"the sandbox pool was still tearing down used sandboxes after {TEARDOWN_WAIT_S} s")
    idle = list(pool._idle)
    return idle if all(sandbox.healthy(timeout_s) for sandbox in idle) else None


@contextlib.contextmanager
def prepared_sandboxes(timeout_s: float = POOL_WAIT_S) -> Iterator[tuple[set[int], set[str]]]:
    """While every pool of the session is held still: the pids, and the slot names (cgroup, work dir), of
    their idle prepared sandboxes, which are the pool's own (each job's sandbox is torn down before this)."""
    with contextlib.ExitStack() as stack:
        sandboxes: list[PreparedSandbox] = []
        for each in _ISOLATIONS:
            if each.pool is None:
                continue
            with contextlib.ExitStack() as attempt:
                idle = _hold_still(each.pool, attempt, timeout_s)
                held = attempt.pop_all()
            if idle is None:  # one is broken or still starting: start again from an empty pool
                held.close()
                each.pool.drain()
                with contextlib.ExitStack() as attempt:
                    idle = _hold_still(each.pool, attempt, timeout_s) or []
                    held = attempt.pop_all()
            stack.enter_context(held)
            sandboxes += idle
        table = kernel.proc_table()
        pids = {pid for sandbox in sandboxes for pid, _ in sandbox.processes(table)}
        names = {sandbox.slot.cgroup_name for sandbox in sandboxes if sandbox.slot.cgroup is not None}
        names |= {os.path.basename(sandbox.slot.workdir) for sandbox in sandboxes if not sandbox.slot.use_bwrap}
        yield pids, names


def assert_host_clean(iso: Isolation) -> None:
    """No process of a slot uid, no job cgroup, no work dir left behind, but those of the pools' prepared
    sandboxes (each waiting for a job as the pool keeps it: a slot uid's processes, a cgroup and, without
    bubblewrap, a work dir). Every used sandbox is torn down before the host is looked at."""
    with prepared_sandboxes() as (spared, slots):
        if iso.layers()["uid_switch"]:
            for slot in range(SLOTS):
                left = [pid for pid in hostclean.pids_of_uid(UID_BASE + slot) if pid not in spared]
                assert left == [], [(pid, kernel.proc_table().get(pid)) for pid in left]
        settings = iso.settings
        for controller in ("memory", "pids"):
            parent = os.path.join(settings.cgroup_root, controller, settings.cgroup_name)
            if os.path.isdir(parent):
                assert [e.name for e in os.scandir(parent) if e.is_dir() and e.name not in slots] == []
        if os.path.isdir(settings.work_root):
            assert [name for name in os.listdir(settings.work_root) if name not in slots] == []


@pytest.fixture
def clean_after(isolation: Isolation) -> Iterator[Isolation]:
    """Yield the isolation; afterwards the host is clean and a normal job still runs."""
    yield isolation
    assert_host_clean(isolation)
    result = run_code(isolation, "python3", "print(input())", stdin="still fine")
    assert result.reason is None and result.stdout == "still fine\n"


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region: moto and Stubber only, never real AWS."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


# -- the cloud sandboxes on their emulators ------------------------------------------------------------------

PLANTED_SECRET = f"planted-secret-{uuid.uuid4().hex}"  # the stack's AWS_SECRET_ACCESS_KEY: no job may see it
ALL_PRCTL = [
    "PR_SET_NAME",
    "PR_SET_PDEATHSIG",
    "PR_SET_CHILD_SUBREAPER",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_SECCOMP",
    "PR_SET_DUMPABLE",
]
REPORTED_IN_LAMBDA = ["PR_SET_NAME", "PR_SET_PDEATHSIG", "PR_SET_CHILD_SUBREAPER"]


@dataclass
class Emulated:
    """The Lambda and Fargate emulators on one copy of the sandbox image, and the adapters on them."""

    lambda_emulator: Any
    fargate_emulator: Any
    events: Any
    sandboxes: dict[str, Any]  # function name -> LambdaSandbox
    fargate: Any  # FargateSandbox

    def function(self, name: str) -> Any:
        """The emulated function a test names by its base name (deployed as `<name>_<memory class>`)."""
        return self.lambda_emulator.functions[f"{name}_{memory_class(SMALL.memory_mb)}"]


FUNCTIONS = {
    "sandbox": {"concurrency": 4},  # the attack suite, several at a time
    "sandbox-warm": {"concurrency": 1},  # one environment: consecutive jobs land in the same one
    "sandbox-deny-all": {"concurrency": 2, "deny_prctl": ALL_PRCTL},
    "sandbox-deny-dumpable": {"concurrency": 1, "deny_prctl": ["PR_SET_DUMPABLE"]},
    "sandbox-lambda-policy": {"concurrency": 4, "deny_prctl": REPORTED_IN_LAMBDA},
    "sandbox-small": {"concurrency": 1, "timeout_s": 4, "memory_mb": 256},  # the function's own limits
}


def _client(service: str, endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**config) if config else None,
    )


@pytest.fixture(scope="session")
def emulated(moto_endpoint: str) -> Iterator[Emulated]:
    from sandboxes import TaskEvents

    from chalicelib.adapters.fargate_sandbox import FargateSandbox
    from chalicelib.adapters.lambda_sandbox import LambdaSandbox
    from devtools.fargate_emulator import FargateConfig, FargateEmulator
    from devtools.lambda_emulator import FunctionConfig, LambdaEmulator
    from devtools.sandbox_emulators import create_fargate_resources
    from devtools.sandbox_host import Host, can_emulate

    why_not = can_emulate()
    if why_not is not None:
        pytest.skip(why_not)
    role = {"AWS_ACCESS_KEY_ID": "ASIATESTINGEMULATED", "AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
            "AWS_SESSION_TOKEN": f"token-{PLANTED_SECRET}"}  # fmt: skip
    host = Host()
    # Deployed by memory class: the adapter invokes `<name>_<mb>`, and the tests' jobs all fit the smallest.
    size = memory_class(SMALL.memory_mb)
    functions = [
        FunctionConfig(name=f"{name}_{size}", environment=role, **options) for name, options in FUNCTIONS.items()
    ]
    lambda_emulator = LambdaEmulator(functions, host)
    endpoint = lambda_emulator.start()
    settings = create_fargate_resources(lambda service: _client(service, moto_endpoint), f"a{uuid.uuid4().hex[:8]}")
    events = TaskEvents()
    ecs, s3 = _client("ecs", moto_endpoint), _client("s3", moto_endpoint)
    fargate_emulator = FargateEmulator(ecs, FargateConfig(cluster=settings["CODERUNNER_FARGATE_CLUSTER"]),
                                       events.deliver, host)  # fmt: skip
    fargate_emulator.start()
    invoke = _client("lambda", endpoint, retries={"max_attempts": 1}, read_timeout=960, max_pool_connections=20)
    fargate = FargateSandbox(
        settings["CODERUNNER_FARGATE_CLUSTER"],
        settings["CODERUNNER_FARGATE_TASK_DEFINITION"],
        [settings["CODERUNNER_FARGATE_SUBNETS"]],
        [settings["CODERUNNER_FARGATE_SECURITY_GROUPS"]],
        settings["CODERUNNER_ARTIFACTS_BUCKET"],
        client=ecs,
        s3_client=s3,
    )
    sandboxes = {name: LambdaSandbox(name, client=invoke) for name in FUNCTIONS}
    try:
        yield Emulated(lambda_emulator, fargate_emulator, events, sandboxes, fargate)
    finally:
        fargate_emulator.stop()
        lambda_emulator.stop()
        host.close()
