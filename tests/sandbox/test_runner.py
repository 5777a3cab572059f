"""Normal behaviour of the runner core: runtimes, tools, exit codes, output handling, grading, cancel."""

from __future__ import annotations

import threading

import pytest
from conftest import SMALL, run_code
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.sandbox import runtimes
from chalicelib.sandbox.grading import normalise, outputs_match
from chalicelib.sandbox.local import Isolation
from chalicelib.sandbox.models import (
    ExecutionRequest,
    FailureReason,
    SourceFile,
    TestCase,
    TestVerdict,
)
from chalicelib.sandbox.runner import InvalidRequest, execute
from chalicelib.sandbox.runtimes import UnknownRuntime

# The sandbox tests share slot uids and check the host is clean afterwards: one xdist worker runs them.
pytestmark = pytest.mark.xdist_group("sandbox")

HELLO = {
    "python3": "print('hello', input())",
    "node": "process.stdin.on('data', d => console.log('hello', d.toString().trim()))",
    "bash": "read name; echo hello $name",
}


@pytest.mark.parametrize("runtime", sorted(HELLO))
def test_hello_world_with_stdin(full_isolation: Isolation, runtime: str) -> None:
    result = run_code(full_isolation, runtime, HELLO[runtime], stdin="world\n")
    assert (result.reason, result.exit_code, result.stdout) == (None, 0, "hello world\n")


def test_exit_code_and_stderr(full_isolation: Isolation) -> None:
    result = run_code(full_isolation, "bash", "echo oops >&2; exit 3")
    assert (result.reason, result.exit_code, result.stderr) == (FailureReason.EXIT_CODE, 3, "oops\n")


def test_signal_is_named(full_isolation: Isolation) -> None:
    result = run_code(full_isolation, "python3", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert (result.reason, result.signal, result.exit_code) == (FailureReason.SIGNAL, "SIGSEGV", None)


def test_non_utf8_output_becomes_replacement_characters(full_isolation: Isolation) -> None:
    result = run_code(full_isolation, "python3", "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end')")
    assert result.stdout == "ok \ufffd\ufffd end"


def test_the_raw_bytes_are_kept_when_they_are_not_utf8(full_isolation: Isolation) -> None:
    code = "import sys\nsys.stdout.buffer.write(bytes([0, 255, 10]))\nsys.stderr.write('é')"
    result = run_code(full_isolation, "python3", code)
    assert result.stdout_raw == "AP8K" and result.output_bytes("stdout") == b"\x00\xff\n"
    assert result.stderr_raw is None and result.output_bytes("stderr") == "é".encode()  # valid UTF-8: the text


def test_stderr_over_the_cap_is_truncated_and_stopped(full_isolation: Isolation) -> None:
    result = run_code(full_isolation, "python3", "import sys\nwhile True: sys.stderr.write('e' * 4096)")
    assert result.stderr_truncated and not result.stdout_truncated
    assert result.reason is FailureReason.OUTPUT_LIMIT
    assert len(result.stderr) == SMALL.output_kb * 1024


def test_output_exactly_at_the_cap_is_not_truncated(full_isolation: Isolation) -> None:
    size = SMALL.output_kb * 1024
    result = run_code(full_isolation, "python3", f"import sys\nsys.stdout.write('x' * {size})")
    assert (result.reason, result.stdout_truncated, len(result.stdout)) == (None, False, size)


def test_multi_file_program(full_isolation: Isolation) -> None:
    request = ExecutionRequest(
        job_id="multi",
        runtime="python3",
        files=[SourceFile(path="main.py", content="from lib.util import x\nprint(x)"),
               SourceFile(path="lib/util.py", content="x = 42\n")],
        limits=SMALL,
    )  # fmt: skip
    assert execute(request, isolation=full_isolation).stdout == "42\n"


def test_grading_gives_all_five_verdicts(full_isolation: Isolation) -> None:
    code = (
        "import sys, time\ncmd = sys.stdin.read().strip()\n"
        "if cmd == 'echo': print('same   ')\n"
        "elif cmd == 'wrong': print('different')\n"
        "elif cmd == 'sleep': time.sleep(100)\n"
        "elif cmd == 'memory': x = b'x' * (1024**3)\n"
        "else: sys.exit(2)\n"
    )
    cases = [TestCase(stdin=cmd, expected_stdout="same\n\n") for cmd in ("echo", "wrong", "sleep", "memory", "crash")]
    result = run_code(full_isolation, "python3", code, tests=cases)
    assert result.tests is not None
    verdicts = [case.verdict for case in result.tests.cases]
    assert verdicts == [
        TestVerdict.ACCEPTED,
        TestVerdict.WRONG_ANSWER,
        TestVerdict.TIME_LIMIT,
        TestVerdict.MEMORY_LIMIT,
        TestVerdict.RUNTIME_ERROR,
    ]
    assert (result.tests.total, result.tests.accepted) == (5, 1)
    assert result.stdout == "different\n"  # top level shows the first failing case
    # ...and says why it failed, though that run exited 0
    assert (result.verdict, result.reason) == (TestVerdict.WRONG_ANSWER, FailureReason.WRONG_ANSWER)


def test_all_accepted_shows_the_last_case(full_isolation: Isolation) -> None:
    cases = [TestCase(stdin=str(n), expected_stdout=str(n * 2)) for n in range(3)]
    result = run_code(full_isolation, "python3", "print(int(input()) * 2)", tests=cases)
    assert result.tests is not None and result.tests.accepted == 3
    assert (result.reason, result.stdout, result.verdict) == (None, "4\n", TestVerdict.ACCEPTED)


def test_cancel_mid_run_stops_the_tree(full_isolation: Isolation) -> None:
    cancel = threading.Event()
    code = "import os, time\nos.fork()\nprint('started', flush=True)\ntime.sleep(100)"
    timer = threading.Timer(0.5, cancel.set)
    timer.start()
    result = run_code(
        full_isolation, "python3", code, cancel=cancel, limits=SMALL.model_copy(update={"wall_time_s": 30})
    )
    timer.join()
    assert result.reason is FailureReason.CANCELLED


def test_cancel_before_start(full_isolation: Isolation) -> None:
    cancel = threading.Event()
    cancel.set()
    result = run_code(
        full_isolation,
        "bash",
        "sleep 100",
        cancel=cancel,
        limits=SMALL.model_copy(update={"wall_time_s": 30}),
    )
    assert result.reason is FailureReason.CANCELLED


def test_concurrent_runs_use_separate_slots(full_isolation: Isolation) -> None:
    results: list[str] = []

    def one(n: int) -> None:
        results.append(run_code(full_isolation, "bash", f"echo {n} $(id -u)").stdout)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(line.split()[0] for line in results) == ["0", "1", "2", "3"]
    assert len({line.split()[1] for line in results}) >= 1


def test_a_file_cannot_also_be_a_directory(full_isolation: Isolation) -> None:
    files = [
        SourceFile(path="main.py", content=""),
        SourceFile(path="a", content=""),
        SourceFile(path="a/b", content=""),
    ]
    with pytest.raises(InvalidRequest):
        execute(ExecutionRequest(job_id="bad", runtime="python3", files=files, limits=SMALL), isolation=full_isolation)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x.py", "", "./../../x"])
def test_file_paths_must_stay_in_the_work_dir(full_isolation: Isolation, path: str) -> None:
    request = ExecutionRequest(job_id="bad", runtime="python3", files=[SourceFile(path=path, content="")], limits=SMALL)
    with pytest.raises(InvalidRequest):
        execute(request, isolation=full_isolation)


def test_unknown_runtime_is_a_value_error() -> None:
    request = ExecutionRequest(job_id="x", runtime="cobol", files=[SourceFile(path="a", content="")], limits=SMALL)
    with pytest.raises(ValueError):
        execute(request)
    assert issubclass(UnknownRuntime, ValueError)


def test_registry_lists_available_runtimes_and_tools() -> None:
    names = {info.name: info for info in runtimes.list_runtimes()}
    assert {"python3", "node", "bash"} <= set(names)
    assert all(info.available and info.version not in ("", "unknown") for info in names.values())
    assert runtimes.get_runtime("python3") is not None and runtimes.get_runtime("nope") is None
    assert {tool.name for tool in runtimes.list_tools()} >= {"sort", "wc", "base64"}
    assert runtimes.get_tool("sort") is not None
    assert names["node"].model_dump(mode="json")["default_limits"]["memory_mb"] == 256


@given(st.text(), st.lists(st.sampled_from([" ", "\t", "\r"]), max_size=3), st.integers(0, 3))
def test_trailing_whitespace_never_matters(text: str, pad: list[str], newlines: int) -> None:
    padded = "\n".join(line + "".join(pad) for line in text.split("\n")) + "\n" * newlines
    assert outputs_match(padded, text)


@given(st.text(), st.text())
def test_match_is_equality_of_normal_forms(a: str, b: str) -> None:
    assert outputs_match(a, b) == (normalise(a) == normalise(b))
    assert normalise(normalise(a)) == normalise(a)
