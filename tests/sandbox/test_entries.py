"""The Lambda handler (called directly), sandbox selection and the bench entry."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import LAMBDA_SLOT, SMALL

from chalicelib.sandbox import integrity, lambda_entry
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, ResultRejected, SandboxOffer, SourceFile
from chalicelib.sandbox.selection import pick_sandbox

# The sandbox tests share slot uids and check the host is clean afterwards: one xdist worker runs them.
pytestmark = pytest.mark.xdist_group("sandbox")


@pytest.fixture
def scratch(monkeypatch: pytest.MonkeyPatch, sandbox_root: str) -> Iterator[Path]:
    # Under the session's sandbox root, not pytest's tmp_path: the slot uid traverses to its work dir, and
    # any pytest session on the host resets /tmp/pytest-of-<user> to 0700.
    root = Path(tempfile.mkdtemp(prefix="lambda-tmp-", dir=sandbox_root))
    os.chmod(root, 0o711)
    monkeypatch.setenv(lambda_entry.SCRATCH_ENV, str(root))
    monkeypatch.setenv(lambda_entry.SLOT_ENV, str(LAMBDA_SLOT))  # not a running stack's slot
    yield root
    # The handler leaves its next prepared sandbox (holding the one slot): a test's environment ends here.
    pool = lambda_entry.lambda_isolation(str(root)).pool
    if pool is not None:
        pool.drain()


def _left_in(scratch: Path) -> list[Path]:
    """What a handler left in its scratch dir, but for the next invocation's prepared sandbox (an empty
    work dir, and the dirs leading to it)."""
    pool = lambda_entry.lambda_isolation(str(scratch)).pool
    kept = {Path(path) for path in pool.paths()} if pool is not None else set()
    left = []
    for path in scratch.rglob("*"):
        if path in kept and not any(path.iterdir()):
            continue
        if path.is_dir() and not path.is_symlink() and any(k.is_relative_to(path) for k in kept):
            continue
        left.append(path)
    return left


KEY = integrity.new_key()


def _event(code: str) -> dict[str, Any]:
    request = ExecutionRequest(
        job_id="lambda-job", runtime="python3", files=[SourceFile(path="main.py", content=code)], limits=SMALL
    )
    return {"request": request.model_dump(mode="json"), "key": KEY}


def _result(answer: dict[str, str]) -> ExecutionResult:
    sealed = integrity.open_sealed(answer, KEY, "lambda-job")
    assert sealed.kind == "result"
    return ExecutionResult.model_validate_json(sealed.body)


def test_handler_runs_the_job_and_wipes_scratch(scratch: Path, tmp_path: Path) -> None:
    (scratch / "left-by-previous-job").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (scratch / "link-out").symlink_to(outside)
    result = _result(lambda_entry.handle(_event("print('from lambda')"), None))
    assert (result.stdout, result.sandbox, result.reason) == ("from lambda\n", "lambda", None)
    assert _left_in(scratch) == []
    assert outside.read_text() == "keep"


def test_handler_seals_its_result_with_the_invocation_key(scratch: Path) -> None:
    answer = lambda_entry.handle(_event("import sys\nsys.exit(4)"), None)
    assert json.loads(answer["body"])["exit_code"] == 4 and _result(answer).reason == "exit_code"
    with pytest.raises(ResultRejected):  # another key, another job
        integrity.open_sealed(answer, integrity.new_key(), "lambda-job")
    with pytest.raises(ResultRejected):
        integrity.open_sealed(answer, KEY, "another-job")


def test_handler_needs_a_key(scratch: Path) -> None:
    event = _event("print(1)")
    del event["key"]
    with pytest.raises(ValueError, match="key"):
        lambda_entry.handle(event, None)


def test_handler_probe_answers_its_offer(scratch: Path) -> None:
    sealed = integrity.open_sealed(lambda_entry.handle({"probe": True, "key": KEY}, None), KEY, "probe")
    offer = SandboxOffer.model_validate_json(sealed.body)
    assert sealed.kind == "offer" and offer.sandbox == "lambda"
    assert {"python3", "node", "bash"} <= set(offer.runtimes) and offer.layers["network"] == "seccomp"


def test_handler_rejects_unknown_runtime(scratch: Path) -> None:
    event = _event("")
    event["request"]["runtime"] = "cobol"
    with pytest.raises(ValueError):
        lambda_entry.handle(event, None)


_LEFTOVERS = """
import os, subprocess, sys, time
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "sandbox"
from chalicelib.sandbox import lambda_entry
lambda_entry.become_subreaper()
child = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:  # a daemon: its parent exits, it re-parents to us (the subreaper)
    if os.fork() == 0:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)  # never holds the test's pipe open, whatever happens here
        os.dup2(null, 2)
        os.execv("/bin/sleep", ["sleep", "61"])
    os._exit(0)


def daemon_is_ours():
    me = os.getpid()
    for pid in open(f"/proc/{me}/task/{me}/children").read().split():
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read() == b"sleep\\x0061\\x00":
                return True
        except OSError:
            pass
    return False


deadline = time.monotonic() + 30
while not daemon_is_ours() and time.monotonic() < deadline:
    time.sleep(0.01)
found = lambda_entry.kill_leftovers()
children = [l for l in open(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read().split()]
print(found >= 2, children)
"""


def test_kill_leftovers_kills_and_reaps_every_descendant() -> None:
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _LEFTOVERS], capture_output=True, text=True, env=env, timeout=60)
    assert done.stdout == "True []\n", done.stderr  # nothing left, not even a zombie


def test_kill_leftovers_leaves_a_test_process_alone() -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    try:
        assert lambda_entry.kill_leftovers() == 0  # outside Lambda the process tree is not the handler's
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


BIG = SMALL.model_copy(update={"wall_time_s": 3600, "memory_mb": 512})
HUGE = SMALL.model_copy(update={"memory_mb": 16_384})
ALL = {"python3": "3.11", "node": "18", "bash": "5.2"}


def _offers(with_local: bool, **changes: dict[str, Any]) -> dict[str, SandboxOffer]:
    found = {kind: SandboxOffer(sandbox=kind, runtimes=ALL) for kind in ("local", "lambda", "fargate")}
    if not with_local:
        del found["local"]
    for kind, update in changes.items():
        found[kind] = found[kind].model_copy(update=update)
    return found


NO_NODE = {"runtimes": {"python3": "3.11"}}
REFUSES = {"refusal": "no layer can cut the network"}
UNREACHABLE = {"reachable": False, "refusal": "could not be probed: throttled", "runtimes": {}}


@pytest.mark.parametrize(
    ("requested", "limits", "offers", "runtime", "expected"),
    [
        ("auto", SMALL, _offers(True), "python3", "local"),
        ("auto", SMALL, _offers(False), "python3", "lambda"),
        ("auto", BIG, _offers(False), "python3", "fargate"),
        ("auto", HUGE, _offers(False), "python3", "fargate"),
        ("fargate", SMALL, _offers(True), "python3", "fargate"),
        ("lambda", SMALL, _offers(True), "python3", "lambda"),
        ("auto", SMALL, _offers(False, **{"lambda": NO_NODE}), "node", "fargate"),  # never where it is missing
        ("auto", SMALL, _offers(False, **{"lambda": REFUSES}), "python3", "fargate"),  # a refusal moves on
        ("auto", SMALL, _offers(True, local=REFUSES), "python3", "lambda"),
        ("lambda", SMALL, _offers(False, **{"lambda": REFUSES}), "python3", "lambda"),  # explicit: error later
        ("auto", SMALL, _offers(False, **{"lambda": UNREACHABLE}), "node", "lambda"),  # throttled is no refusal
    ],
)
def test_pick_sandbox(
    requested: str, limits: Any, offers: dict[str, SandboxOffer], runtime: str, expected: str
) -> None:
    assert pick_sandbox(requested, limits, offers, runtime) == expected


@pytest.mark.parametrize(
    ("requested", "limits", "offers", "runtime"),
    [
        ("local", SMALL, _offers(False), "python3"),
        ("lambda", BIG, _offers(True), "python3"),
        ("gpu", SMALL, _offers(True), "python3"),
        ("lambda", SMALL, _offers(False, **{"lambda": NO_NODE}), "node"),
        ("auto", SMALL, _offers(False, **{"lambda": NO_NODE, "fargate": NO_NODE}), "node"),
        ("auto", BIG, {"lambda": SandboxOffer(sandbox="lambda", runtimes=ALL)}, "python3"),
    ],
)
def test_pick_sandbox_refuses(requested: str, limits: Any, offers: dict[str, SandboxOffer], runtime: str) -> None:
    with pytest.raises(ValueError):
        pick_sandbox(requested, limits, offers, runtime)


def test_lambda_is_chosen_only_when_every_test_run_fits_one_invocation() -> None:
    minute = SMALL.model_copy(update={"wall_time_s": 60})
    assert pick_sandbox("auto", minute, _offers(False), "python3", runs=1) == "lambda"
    assert pick_sandbox("auto", minute, _offers(False), "python3", runs=13) == "lambda"  # 13 x 61 s + 60 s = 853 s
    assert pick_sandbox("auto", minute, _offers(False), "python3", runs=20) == "fargate"  # 20 x 61 s + 60 s > 900 s
    with pytest.raises(ValueError, match="20 run"):
        pick_sandbox("lambda", minute, _offers(False), "python3", runs=20)


def test_the_smallest_memory_class_that_holds_the_job_and_its_headroom() -> None:
    from chalicelib.sandbox.selection import memory_class, sandbox_function_name

    assert memory_class(128) == memory_class(256) == 1769  # a small job never pays for 3 GB
    assert memory_class(1641) == 1769 and memory_class(1642) == 3136
    assert sandbox_function_name(3008) == "sandbox_3136"
    assert memory_class(3009) is None and pick_sandbox("auto", HUGE, _offers(False), "python3") == "fargate"


_REFUSED_SUBREAPER = """
import logging, os, sys
from chalicelib.sandbox import kernel, seccomp_filter
kernel.install_filter(seccomp_filter.deny_prctl_filter(["PR_SET_CHILD_SUBREAPER"]))
logging.basicConfig(format="%(message)s")
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "sandbox"
from chalicelib.sandbox import lambda_entry
print(lambda_entry.become_subreaper(), lambda_entry.become_subreaper())
"""


def test_handler_reports_a_refused_subreaper_once() -> None:
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _REFUSED_SUBREAPER], capture_output=True, text=True, env=env)
    assert done.stdout == "False False\n", done.stderr
    assert done.stderr.count("PR_SET_CHILD_SUBREAPER) refused") == 1
