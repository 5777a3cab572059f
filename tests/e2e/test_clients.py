"""The Python client's `coderunner` command and its examples, as written, against the local stack."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coderunner_client import Client
from tests.e2e.stackproc import StackProcess, timestamp

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"
CODERUNNER = Path(sys.executable).with_name("coderunner")  # the installed entry point, beside this Python


def user_env(stack: StackProcess, key: str) -> dict[str, str]:
    """What a user's shell would hold: the URL and key only (no AWS settings, no stack files)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CODERUNNER_"))}
    return {**env, "CODERUNNER_URL": stack.base_url, "CODERUNNER_API_KEY": key}


def coderunner(env: dict[str, str], *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CODERUNNER), *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_coderunner_run_prints_the_output_and_exits_with_the_programs_code(stack: StackProcess, tmp_path: Path) -> None:
    program = tmp_path / "hello.py"
    program.write_text("import sys\nprint('hello', input())\nprint('to stderr', file=sys.stderr)\nsys.exit(3)\n")
    (tmp_path / "name.txt").write_text("world\n")
    done = coderunner(user_env(stack, stack.make_key("pro")), "run", "hello.py", "--stdin", "name.txt", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "hello world\n"
    status, program_stderr = done.stderr.splitlines()[-2:]  # the status line's verdict, then the program's stderr
    assert status.startswith("failed (exit code 3) in ") and program_stderr == "to stderr"


def test_a_queued_job_shows_its_position_and_eta(stack: StackProcess, tmp_path: Path) -> None:
    """A free key runs 2 jobs at once: with 2 running, the third waits queued, and the line says so."""
    key = stack.make_key("free")
    with Client(stack.base_url, key) as client:
        sleepers = [client.submit("sleep 3", runtime="bash", limits={"wall_time_s": 8}) for _ in range(2)]
        deadline = time.monotonic() + 30
        while any(client.get(s.id).status != "running" for s in sleepers):
            assert time.monotonic() < deadline, "the two sleepers did not start"
            time.sleep(0.1)
        (tmp_path / "after.sh").write_text("echo after\n")
        done = coderunner(user_env(stack, key), "run", "after.sh", cwd=tmp_path)
        assert done.returncode == 0 and done.stdout == "after\n", done.stderr
        lines = done.stderr.splitlines()
        assert re.fullmatch(r"queued at position \d+, about \d+ s", lines[0]), lines
        assert lines[-1].startswith("succeeded in ")  # ("running" shows only if a poll catches it running)
        # It really waited for a slot: it started only after one of the sleepers had finished.
        mine = client.jobs(limit=1).jobs[0]
        finished = [client.get(s.id).raw["finished_at"] for s in sleepers]
        assert timestamp(mine.raw["started_at"]) >= min(timestamp(f) for f in finished)


def example(stack: StackProcess, name: str) -> subprocess.CompletedProcess[str]:
    """Run one of the client's examples as a user would, with a fresh pro key."""
    env = user_env(stack, stack.make_key("pro"))
    done = subprocess.run([sys.executable, name], env=env, cwd=EXAMPLES, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_the_judge_example_runs_as_written(stack: StackProcess) -> None:
    out = example(stack, "judge.py").stdout
    assert "alice: succeeded, 3/3 tests accepted" in out
    assert "bob: failed, 0/3 tests accepted" in out and "  test 1: wrong_answer" in out
    assert "carol: succeeded, 3/3 tests accepted" in out


def test_the_agent_tool_example_runs_as_written(stack: StackProcess) -> None:
    calls = [json.loads(line) for line in example(stack, "agent_tool.py").stdout.splitlines()]
    assert [c["verdict"] for c in calls] == ["ok", "ok", "error", "timeout", "refused"]
    assert calls[0]["stdout"] == "45\n" and calls[1]["stdout"] == "1,4,9\n"
    assert calls[2]["exit_code"] == 3 and calls[2]["stderr"] == "oops\n"
    assert calls[4]["stderr"].startswith("validation_error")
