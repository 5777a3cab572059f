"""The Lambda handler (called directly), sandbox selection and the bench entry."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAMBDA_SLOT, SMALL

from chalicelib.sandbox import lambda_entry
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SourceFile
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


def _event(code: str) -> dict[str, object]:
    request = ExecutionRequest(
        job_id="lambda-job", runtime="python3", files=[SourceFile(path="main.py", content=code)], limits=SMALL
    )
    return request.model_dump(mode="json")


def test_handler_runs_the_job_and_wipes_scratch(scratch: Path, tmp_path: Path) -> None:
    (scratch / "left-by-previous-job").write_text("x")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (scratch / "link-out").symlink_to(outside)
    answer = lambda_entry.handle(_event("print('from lambda')"), None)
    result = ExecutionResult.model_validate(answer)
    assert (result.stdout, result.sandbox, result.reason) == ("from lambda\n", "lambda", None)
    assert _left_in(scratch) == []
    assert outside.read_text() == "keep"


def test_handler_result_is_json_ready(scratch: Path) -> None:
    answer = lambda_entry.handle(_event("import sys\nsys.exit(4)"), None)
    assert answer["exit_code"] == 4 and answer["reason"] == "exit_code"


def test_handler_rejects_unknown_runtime(scratch: Path) -> None:
    event = _event("")
    event["runtime"] = "cobol"
    with pytest.raises(ValueError):
        lambda_entry.handle(event, None)


def test_kill_leftovers_only_touches_descendants() -> None:
    import subprocess

    child = subprocess.Popen(["sleep", "60"])
    assert lambda_entry.kill_leftovers() >= 1
    assert child.wait(timeout=10) == -9


BIG = SMALL.model_copy(update={"wall_time_s": 3600, "memory_mb": 512})
HUGE = SMALL.model_copy(update={"memory_mb": 16_384})


@pytest.mark.parametrize(
    ("requested", "limits", "local", "expected"),
    [
        ("auto", SMALL, True, "local"),
        ("auto", SMALL, False, "lambda"),
        ("auto", BIG, False, "fargate"),
        ("auto", HUGE, False, "fargate"),
        ("fargate", SMALL, True, "fargate"),
        ("lambda", SMALL, True, "lambda"),
    ],
)
def test_pick_sandbox(requested: str, limits: object, local: bool, expected: str) -> None:
    assert pick_sandbox(requested, limits, local) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("requested", "limits", "local"), [("local", SMALL, False), ("lambda", BIG, True), ("gpu", SMALL, True)]
)
def test_pick_sandbox_refuses(requested: str, limits: object, local: bool) -> None:
    with pytest.raises(ValueError):
        pick_sandbox(requested, limits, local)  # type: ignore[arg-type]


def test_lambda_is_chosen_only_when_every_test_run_fits_one_invocation() -> None:
    minute = SMALL.model_copy(update={"wall_time_s": 60})
    assert pick_sandbox("auto", minute, False, runs=1) == "lambda"
    assert pick_sandbox("auto", minute, False, runs=13) == "lambda"  # 13 x 61 s + 60 s = 853 s
    assert pick_sandbox("auto", minute, False, runs=20) == "fargate"  # 20 x 61 s + 60 s > 900 s
    with pytest.raises(ValueError, match="20 run"):
        pick_sandbox("lambda", minute, False, runs=20)


def test_the_smallest_memory_class_that_holds_the_job_and_its_headroom() -> None:
    from chalicelib.sandbox.selection import memory_class, sandbox_function_name

    assert memory_class(128) == memory_class(256) == 1769  # a small job never pays for 3 GB
    assert memory_class(1641) == 1769 and memory_class(1642) == 3136
    assert sandbox_function_name(3008) == "sandbox_3136"
    assert memory_class(3009) is None and pick_sandbox("auto", HUGE, False) == "fargate"


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
