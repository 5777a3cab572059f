"""Large inputs and results go to the results bucket; the job's record keeps a small part and a reference
(services/payloads.py), and GET returns the whole result or, above what an answer holds, a preview and a URL."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionResult, TestResult, TestSummary, TestVerdict
from chalicelib.sandbox.runner import CASE_OUTPUT_CHARS, fit
from chalicelib.services import payloads
from chalicelib.services.keys import authenticate
from chalicelib.services.queries import get_job, list_jobs
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message
from tests.fakes import FakeSandbox

BIG_STDIN = "x" * (256 * 1024)


def test_a_small_job_stays_whole_in_its_record(deps: Any, key: str) -> None:
    job = submit_job(deps, key, {"runtime": "python", "source": "print(1)", "stdin": "hi"}).job
    assert job.spec_ref is None and deps.blobs.blobs == {}
    handle_message(deps, {"job_id": job.id})
    assert deps.jobs.get(job.id).result_ref is None


def test_a_large_input_is_stored_apart_and_run_whole(deps: Any, key: str) -> None:
    job = submit_job(deps, key, {"runtime": "python", "source": "print(1)", "stdin": BIG_STDIN}).job
    stored = deps.jobs.get(job.id)
    assert stored.spec_ref == payloads.spec_key(job.id) and stored.spec.stdin == ""
    assert stored.spec.runtime == "python3" and stored.spec.limits == job.spec.limits
    assert handle_message(deps, {"job_id": job.id}) == "succeeded"
    assert deps.sandboxes["local"].calls[0].stdin == BIG_STDIN  # the sandbox got the whole input


def test_a_large_result_is_stored_apart_and_returned_whole(deps: Any, key: str) -> None:
    out = "y" * (100 * 1024)
    deps.sandboxes["local"] = FakeSandbox(ExecutionResult(exit_code=0, stdout=out, wall_ms=7))
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)"}).job.id
    assert handle_message(deps, {"job_id": job_id}) == "succeeded"
    stored = deps.jobs.get(job_id)
    assert stored.result_ref == payloads.result_key(job_id) and len(stored.result.stdout) == payloads.PREVIEW_CHARS
    view = get_job(deps, authenticate(deps, key), job_id)
    assert view.result is not None and view.result.stdout == out and view.result.full_result_url is None
    listed = list_jobs(deps, authenticate(deps, key), 20, None).jobs[0].result
    assert listed is not None and len(listed.stdout) == payloads.PREVIEW_CHARS and listed.full_result_url


def test_a_result_too_large_to_answer_comes_as_a_preview_and_a_url(deps: Any, key: str) -> None:
    cases = [TestResult(verdict=TestVerdict.ACCEPTED, stdout="c" * 100) for _ in range(3)]
    huge = ExecutionResult(
        exit_code=0, stdout="\x01" * (1024 * 1024), tests=TestSummary(total=3, accepted=3, cases=cases)
    )
    deps.sandboxes["local"] = FakeSandbox(huge)  # 1 MiB of control characters: 6 MiB as JSON
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)"}).job.id
    handle_message(deps, {"job_id": job_id})
    view = get_job(deps, authenticate(deps, key), job_id)
    assert view.status is JobStatus.SUCCEEDED and view.result is not None
    assert view.result.full_result_url == f"https://blobs.invalid/{payloads.result_key(job_id)}?ttl=3600"
    assert len(view.result.stdout) == payloads.PREVIEW_CHARS and view.result.tests.cases[0].stdout == ""
    whole = json.loads(deps.blobs.get(payloads.result_key(job_id)))
    assert whole["stdout"] == huge.stdout and whole["tests"]["cases"][0]["stdout"] == "c" * 100


def test_a_result_always_fits_one_sandbox_response() -> None:
    result = fit(ExecutionResult(stdout="\x01" * (1024 * 1024), stderr="e" * 1024))  # 6 MiB of JSON
    assert len(json.dumps(result.model_dump(mode="json"))) <= 5 * 1024 * 1024
    assert result.stdout_truncated and not result.stderr_truncated and result.stderr == "e" * 1024
    plain = ExecutionResult(stdout="a" * (1024 * 1024))
    assert fit(plain) == plain  # a megabyte of text is not touched


def test_each_test_case_keeps_the_start_of_its_output(deps: Any) -> None:
    from chalicelib.sandbox.models import FailureReason
    from chalicelib.sandbox.runner import _case

    case = _case(ExecutionResult(stdout="z" * (CASE_OUTPUT_CHARS + 1), reason=None), TestVerdict.ACCEPTED)
    assert len(case.stdout) == CASE_OUTPUT_CHARS and case.stdout_truncated and not case.stderr_truncated
    failed = _case(ExecutionResult(stderr="boom", reason=FailureReason.EXIT_CODE), TestVerdict.RUNTIME_ERROR)
    assert failed.stderr == "boom" and not failed.stderr_truncated
