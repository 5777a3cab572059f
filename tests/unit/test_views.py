"""How a stored result is shown: the exact bytes in base64, graded cases numbered next to what they ran, and a
job stored before those fields existed still rendered."""

from __future__ import annotations

import base64

from chalicelib.domain.views import ECHO_BYTES, ResultView
from chalicelib.sandbox.models import ExecutionResult, TestCase, TestResult, TestSummary, TestVerdict


def test_base64_encodes_the_bytes_the_program_wrote() -> None:
    result = ExecutionResult(exit_code=0, stdout="\x00\ufffd\n", stdout_raw="AP8K")
    assert ResultView.of(result, "base64").stdout == "AP8K"  # not AO+/vQo= (the replaced text)
    assert ResultView.of(result, "utf-8").stdout == "\x00\ufffd\n"


def test_a_result_stored_before_raw_bytes_renders_from_its_text() -> None:
    stored = ExecutionResult.model_validate_json('{"exit_code": 0, "stdout": "h\\u00e9", "stderr": "x"}')
    assert ResultView.of(stored, "base64").stdout == base64.b64encode("hé".encode()).decode()
    assert ResultView.of(stored, "utf-8").stdout == "hé"


def _graded(cases: list[TestResult]) -> ExecutionResult:
    accepted = sum(1 for c in cases if c.verdict is TestVerdict.ACCEPTED)
    return ExecutionResult(exit_code=0, tests=TestSummary(total=len(cases), accepted=accepted, cases=cases))


def test_cases_are_numbered_and_echo_their_input_and_expected_output_cut_at_one_kib() -> None:
    cases = [
        TestResult(verdict=TestVerdict.ACCEPTED, exit_code=0, stdout="3\n"),
        TestResult(verdict=TestVerdict.WRONG_ANSWER, exit_code=0, stdout="\xff", stdout_raw="/w=="),
    ]
    given = [TestCase(stdin="1 2", expected_stdout="3"), TestCase(stdin="é" * ECHO_BYTES, expected_stdout="4")]
    view = ResultView.of(_graded(cases), "base64", given)
    assert view.verdict is TestVerdict.WRONG_ANSWER and view.reason == "wrong_answer"
    assert view.tests is not None
    first, second = view.tests.cases
    assert (first.index, first.stdin, first.expected_stdout, first.stdin_truncated) == (1, "1 2", "3", False)
    assert first.stdout == base64.b64encode(b"3\n").decode() and second.stdout == "/w=="
    assert second.index == 2 and second.stdin_truncated and not second.expected_stdout_truncated
    assert second.stdin == "é" * (ECHO_BYTES // 2)  # whole characters only (é is 2 bytes)


def test_a_graded_result_stored_before_verdicts_gets_its_verdict_and_reason_from_its_cases() -> None:
    stored = _graded([TestResult(verdict=TestVerdict.ACCEPTED), TestResult(verdict=TestVerdict.WRONG_ANSWER)])
    view = ResultView.of(stored, "utf-8")  # and without the job's test cases: nothing to echo
    assert view.verdict is TestVerdict.WRONG_ANSWER and view.reason == "wrong_answer"
    assert view.tests is not None and [c.stdin for c in view.tests.cases] == [None, None]
    passed = ResultView.of(_graded([TestResult(verdict=TestVerdict.ACCEPTED)]), "utf-8")
    assert passed.verdict is TestVerdict.ACCEPTED and passed.reason is None


def test_the_job_finished_event_carries_the_same_exact_bytes_in_base64() -> None:
    from chalicelib.domain.events import build_event
    from chalicelib.domain.jobs import Job, JobSpec, JobStatus
    from chalicelib.sandbox.models import SandboxLimits

    limits = SandboxLimits(wall_time_s=1, cpu_time_s=1, memory_mb=64, output_kb=8, processes=8)
    job = Job(
        id="j1",
        owner="acme",
        key_id="key_1",
        tier="free",
        status=JobStatus.SUCCEEDED,
        spec=JobSpec(runtime="python3", limits=limits, output_encoding="base64"),
        created_at=1.0,
        finished_at=2.0,
        result=ExecutionResult(exit_code=0, stdout="\x00\ufffd\n", stdout_raw="AP8K"),
    )
    summary = build_event(job, "evt_000000000001").job["result"]
    assert summary["stdout"] == "AP8K" and summary["encoding"] == "base64" and not summary["stdout_truncated"]
