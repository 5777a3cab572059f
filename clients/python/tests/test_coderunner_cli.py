"""`coderunner run / jobs / usage` against httpx.MockTransport: exit codes, plain output, options anywhere."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from coderunner_client import exitcodes as crcli
from coderunner_client.cli import Io, cli

KEY = "cr_cli-test-key"
ENV = {"CODERUNNER_API_KEY": KEY, "CODERUNNER_URL": "http://127.0.0.1:9"}


def job(status: str, **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "tier": "free", "runtime": "python3", **extra}


class FakeApi:
    """Answers a submit with `queued`, then each poll with the next state; records requests."""

    def __init__(self, *states: dict[str, Any], submit: httpx.Response | None = None) -> None:
        self.states, self.submit, self.requests = list(states), submit, []  # type: list[dict[str, Any]], Any, list[httpx.Request]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "POST":
            return self.submit or httpx.Response(202, json=job("queued", position=3, estimated_wait_s=12.4))
        if request.url.path == "/v1/jobs":
            return httpx.Response(200, json={"jobs": self.states, "next_cursor": None})
        if request.url.path == "/v1/usage":
            return httpx.Response(200, json=self.states[0])
        return httpx.Response(200, json=self.states.pop(0) if len(self.states) > 1 else self.states[0])

    def body(self) -> dict[str, Any]:
        return dict(json.loads(self.requests[0].content))


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def run(api: FakeApi, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str = "") -> Run:
    out, err = io.StringIO(), io.StringIO()
    code = cli(
        list(argv),
        Io(out, err, io.StringIO(stdin)),
        ENV if env is None else env,
        cwd or Path("/"),
        httpx.MockTransport(api.handle),
    )
    return Run(code, out.getvalue(), err.getvalue())


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "hello.py"
    path.write_text("print(input())")
    return path


def finished(status: str, **result: Any) -> dict[str, Any]:
    return job(status, result={"exit_code": None, "signal": None, "reason": None, "stdout": "", "stderr": "", **result})


def test_run_prints_the_output_and_exits_with_the_programs_code(program: Path) -> None:
    api = FakeApi(job("running"), finished("failed", exit_code=3, reason="exit_code", stdout="out\n", stderr="err\n"))
    got = run(api, "run", str(program))
    assert got.code == 3 and got.out == "out\n"
    lines = got.err.splitlines()
    # Not a TTY: one plain line per change, no control characters; the program's stderr after the verdict.
    assert lines[:3] == ["queued at position 3, about 12 s", "running", "failed (exit code 3) in 0.00 s"]
    assert lines[3] == "err" and "\x1b" not in got.err
    assert api.body() == {"runtime": "python3", "source": "print(input())"}
    assert api.requests[0].headers["idempotency-key"]


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (finished("succeeded", exit_code=0), 0),
        (finished("failed", exit_code=1, reason="exit_code"), 1),
        (finished("timed_out", reason="wall_time", signal="SIGKILL"), crcli.EXIT_TIMEOUT),
        (finished("timed_out", reason="cpu_time", signal="SIGXCPU"), 124),
        (finished("failed", reason="memory_limit", signal="SIGKILL"), crcli.EXIT_MEMORY_LIMIT),
        (finished("failed", reason="output_limit", signal="SIGKILL"), crcli.EXIT_OUTPUT_LIMIT),
        (finished("failed", reason="signal", signal="SIGSEGV"), 139),
        (job("cancelled"), crcli.EXIT_CANCELLED),
        (job("error", error="sandbox unavailable after 3 attempts"), crcli.EXIT_PLATFORM),
        (
            finished(
                "failed",
                exit_code=0,
                tests={"total": 2, "accepted": 1, "cases": [{"verdict": "accepted"}, {"verdict": "wrong_answer"}]},
            ),
            crcli.EXIT_WRONG_ANSWER,
        ),
        (
            finished(
                "failed", reason="wall_time", tests={"total": 1, "accepted": 0, "cases": [{"verdict": "time_limit"}]}
            ),
            124,
        ),
    ],
)
def test_each_verdict_has_its_exit_code(program: Path, state: dict[str, Any], code: int) -> None:
    assert run(FakeApi(state), "run", str(program)).code == code


def test_the_exit_codes_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["run", "--help"], Io(io.StringIO(), io.StringIO(), io.StringIO()), ENV, Path("/")) == 0
    text = capsys.readouterr().out
    for code in ("124", "123", "122", "121", "120", "77", "75", "69", "65", "128+n"):
        assert f"  {code} " in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--key", "cr_other", "run", "{file}"],
        ["run", "{file}", "--json", "--key", "cr_other"],
        ["--key", "cr_other", "run", "--json", "{file}"],
    ],
)
def test_global_options_work_before_or_after_the_command(program: Path, argv: list[str]) -> None:
    api = FakeApi(finished("succeeded", exit_code=0, stdout="hi\n"))
    got = run(api, *[a.replace("{file}", str(program)) for a in argv])
    assert got.code == 0 and json.loads(got.out)["status"] == "succeeded"
    assert api.requests[0].headers["authorization"] == "Bearer cr_other"
    assert got.err == ""  # --json: no status line, only the job JSON on stdout


def test_stdin_tests_and_runtime_options(tmp_path: Path) -> None:
    source = tmp_path / "sum.js"
    source.write_text("console.log(1)")
    tests = tmp_path / "tests.json"
    tests.write_text(json.dumps([{"stdin": "1", "expected_stdout": "1"}]))
    api = FakeApi(
        finished("succeeded", exit_code=0, tests={"total": 1, "accepted": 1, "cases": [{"verdict": "accepted"}]})
    )
    got = run(api, "run", str(source), "--stdin", "-", "--tests", str(tests), stdin="typed in")
    assert got.code == 0 and "test 1: accepted" in got.err
    assert api.body() == {
        "runtime": "node",
        "source": "console.log(1)",
        "stdin": "typed in",
        "tests": [{"stdin": "1", "expected_stdout": "1"}],
    }
    api = FakeApi(finished("succeeded", exit_code=0))
    assert run(api, "run", str(source), "--runtime", "bash").code == 0 and api.body()["runtime"] == "bash"


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    unknown = tmp_path / "prog.cob"
    unknown.write_text("x")
    got = run(FakeApi(), "run", str(unknown))
    assert got.code == 2 and "--runtime" in got.err
    got = run(FakeApi(), "run", str(tmp_path / "missing.py"))
    assert got.code == 2 and "cannot read" in got.err
    assert run(FakeApi(), "run").code == 2  # argparse: the file is required


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (httpx.Response(401, json={"error": {"code": "unauthorized", "message": "unknown key"}}), crcli.EXIT_AUTH),
        (
            httpx.Response(
                422, json={"error": {"code": "validation_error", "message": "no", "details": [{"field": "x"}]}}
            ),
            65,
        ),
        (
            httpx.Response(
                429, json={"error": {"code": "daily_quota_exceeded", "message": "no"}}, headers={"Retry-After": "9999"}
            ),
            75,
        ),
        (httpx.Response(500, json={"error": {"code": "internal_error", "message": "bug"}}), crcli.EXIT_PLATFORM),
    ],
)
def test_refusals_have_their_exit_codes_and_never_print_the_key(
    program: Path, answer: httpx.Response, code: int
) -> None:
    got = run(FakeApi(submit=answer), "run", str(program))
    assert got.code == code and "error:" in got.err and KEY not in got.err + got.out


def test_wait_timeout_leaves_the_job_and_exits_75(program: Path) -> None:
    got = run(FakeApi(job("queued", position=0, estimated_wait_s=0)), "run", str(program), "--wait-timeout", "0")
    assert got.code == crcli.EXIT_BUSY and "job j1 goes on" in got.err and "queued at position 3" in got.err


def test_the_local_stacks_files_give_the_key_and_url(tmp_path: Path, program: Path) -> None:
    dev = tmp_path / ".dev"
    dev.mkdir()
    (dev / "keys.json").write_text(json.dumps({"pro": "cr_pro", "free": "cr_free"}))
    (dev / "stack.json").write_text(json.dumps({"api": "http://127.0.0.1:8123"}))
    (tmp_path / "sub").mkdir()
    api = FakeApi(finished("succeeded", exit_code=0))
    got = run(api, "run", str(program), env={}, cwd=tmp_path / "sub")
    assert got.code == 0 and "free key" in got.err
    assert api.requests[0].headers["authorization"] == "Bearer cr_free"
    assert str(api.requests[0].url).startswith("http://127.0.0.1:8123/")
    got = run(FakeApi(), "run", str(program), env={}, cwd=Path("/"))
    assert got.code == 2 and "no API key" in got.err


def test_jobs_is_a_plain_table_newest_first_with_iso_times() -> None:
    states = [
        finished("succeeded", exit_code=0, wall_ms=41) | {"id": "new", "created_at": "2026-11-23T17:50:55.740Z"},
        job("queued") | {"id": "old", "created_at": "2026-11-23T17:40:00.000Z"},
    ]
    got = run(FakeApi(*states), "jobs", "--limit", "5")
    lines = got.out.splitlines()
    assert got.code == 0 and lines[0].split() == ["id", "status", "runtime", "created", "wall", "ms", "exit"]
    assert lines[1].split() == ["new", "succeeded", "python3", "2026-11-23T17:50:55.740Z", "41", "0"]
    assert lines[2].split()[:2] == ["old", "queued"]
    assert json.loads(run(FakeApi(*states), "jobs", "--json").out)[0]["id"] == "new"


def test_usage_shows_reset_times_in_iso() -> None:
    usage = {
        "key_id": "key_1",
        "owner": "acme",
        "tier": "free",
        "per_minute": {"limit": 10, "used": 1, "remaining": 9, "reset": 1795000020},
        "per_day": {"limit": 100, "used": 1, "remaining": 99, "reset": 1795046400},
        "concurrency": {"limit": 2, "running": 1},
    }
    got = run(FakeApi(usage), "usage")
    assert got.code == 0 and "key_1 (acme, free tier)" in got.out
    assert "2026-11-18T11:07:00Z" in got.out and "running at once" in got.out


def test_keys_without_the_checkout_says_what_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "devtools", None)  # as if only the client package were installed
    got = run(FakeApi(), "--json", "keys", "list")
    assert got.code == 2 and "needs the code-runner checkout" in got.err


def test_keys_is_handed_to_the_operator_cli_whatever_the_option_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools import cli as operator_cli

    seen: list[list[str]] = []
    monkeypatch.setattr(operator_cli, "main", lambda argv, out: seen.append(argv) or 0)
    assert run(FakeApi(), "--json", "keys", "list").code == 0
    assert run(FakeApi(), "--stage", "prod", "keys", "list", "--json").code == 0
    assert seen == [["--json", "keys", "list"], ["--stage", "prod", "keys", "list", "--json"]]
