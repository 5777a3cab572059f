"""A job record is one DynamoDB item: the stored spec is capped at submit, the result trimmed to fit."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.errors import PayloadTooLarge
from chalicelib.domain.records import MAX_RESULT_BYTES, fit_result, stored_size
from chalicelib.sandbox.models import ExecutionResult, TestResult, TestSummary, TestVerdict
from chalicelib.services.submit import submit_job


def test_a_result_that_fits_is_kept_as_is() -> None:
    for result in (ExecutionResult(exit_code=0, stdout="ok\n"), ExecutionResult(stdout="a" * 150_000)):
        assert fit_result(result) is result


def test_only_the_long_outputs_are_cut() -> None:
    fitted = fit_result(ExecutionResult(stdout="a" * 300_000, stderr="Traceback ...\n" * 50))
    assert fitted.stderr == "Traceback ...\n" * 50 and not fitted.stderr_truncated
    assert fitted.stdout_truncated and 140_000 < len(fitted.stdout) < MAX_RESULT_BYTES


@pytest.mark.parametrize("char", ["a", "\x01", "\U0001f600"])  # 1 byte, 6 bytes escaped, 4 bytes in UTF-8
def test_outputs_are_cut_until_the_result_fits(char: str) -> None:
    big = char * 1_100_000
    case = TestResult(verdict=TestVerdict.WRONG_ANSWER, stdout=big, stderr=big)
    result = ExecutionResult(
        exit_code=1, stdout=big, stderr=big, tests=TestSummary(total=20, accepted=0, cases=[case] * 20)
    )
    fitted = fit_result(result)
    assert stored_size(fitted) <= MAX_RESULT_BYTES
    assert fitted.stdout_truncated and fitted.stderr_truncated and fitted.stdout.startswith(char * 100)
    assert fitted.exit_code == 1 and fitted.tests is not None and len(fitted.tests.cases) == 20


def test_the_stored_job_is_capped_at_submit_naming_the_biggest_fields(deps: Any, key: str) -> None:
    job = {
        "runtime": "python",
        "source": "print(1)",
        "stdin": "x" * 150_000,
        "tests": [{"stdin": "y" * 30_000, "expected_stdout": "z" * 30_000}],
    }
    with pytest.raises(PayloadTooLarge) as err:
        submit_job(deps, key, job)
    assert [d["field"] for d in err.value.details] == ["stdin", "tests", "source"]
    assert deps.jobs.jobs == {} and err.value.usage is not None and err.value.usage.minute_remaining == 10
