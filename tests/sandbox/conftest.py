"""Fixtures for the sandbox tests: the two isolations (full local, Lambda-like) and cleanliness checks."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

import pytest

# Until pytest's `pythonpath` names the repo root, make `chalicelib` importable when pytest is run directly.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from chalicelib.sandbox import hostclean  # noqa: E402
from chalicelib.sandbox.local import Isolation, IsolationSettings  # noqa: E402
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxLimits, SourceFile  # noqa: E402
from chalicelib.sandbox.runner import execute  # noqa: E402

SMALL = SandboxLimits(wall_time_s=2, cpu_time_s=1, memory_mb=128, output_kb=16, processes=16)
ENTRY = {"python3": "main.py", "node": "main.js", "bash": "main.sh"}
UID_BASE = 64500  # away from the worker's default slot uids, so a running dev stack is not disturbed
SLOTS = 4  # each isolation's pool holds one, and a pool never takes the last free slot
LAMBDA_SLOT = 64590  # the Lambda handler's one slot in these tests (a local stack's pools hold 64000 and up)
POOL_WAIT_S = 10  # a test's run waits this long for a prepared sandbox, then starts one itself

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


def assert_host_clean(iso: Isolation) -> None:
    """No process of a slot uid, no job cgroup, no work dir left behind (the pool drained first: its
    prepared sandboxes hold a slot uid's processes, a cgroup and, without bubblewrap, a work dir)."""
    for each in _ISOLATIONS:
        if each.pool is not None:
            each.pool.drain()
    if iso.layers()["uid_switch"]:
        for slot in range(SLOTS):
            assert hostclean.pids_of_uid(UID_BASE + slot) == []
    settings = iso.settings
    for controller in ("memory", "pids"):
        parent = os.path.join(settings.cgroup_root, controller, settings.cgroup_name)
        if os.path.isdir(parent):
            assert [e.name for e in os.scandir(parent) if e.is_dir()] == []
    if os.path.isdir(settings.work_root):
        assert os.listdir(settings.work_root) == []


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
