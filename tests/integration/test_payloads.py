"""The largest job a user may submit, and its largest result, through the real adapters on moto: the job's item
stays far below DynamoDB's 400 KB, the bulk goes to the results bucket, and the result comes back whole."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from chalicelib.config import settings_from_env
from chalicelib.domain.exits import Finished
from chalicelib.sandbox.models import ExecutionResult, TestResult, TestSummary, TestVerdict
from chalicelib.sandbox.runner import CASE_OUTPUT_CHARS, fit
from chalicelib.services import payloads
from chalicelib.services.keys import authenticate, create_key
from chalicelib.services.lifecycle import end_job
from chalicelib.services.queries import get_job
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import start
from devtools.capacity import item_size

DYNAMODB_ITEM_LIMIT = 400 * 1024
SETTINGS = settings_from_env({})


def largest_job() -> dict[str, Any]:
    """Every limit at its maximum: the source, stdin, 20 tests sharing what the inputs' total leaves, output."""
    stdin = "i" * SETTINGS.max_stdin_bytes
    each = (SETTINGS.max_input_bytes - len(stdin)) // 40
    tests = [{"stdin": "s" * each, "expected_stdout": "e" * each} for _ in range(20)]
    return {
        "runtime": "python",
        "source": "#" * SETTINGS.max_source_bytes,
        "stdin": stdin,
        "tests": tests,
        "args": ["a" * 255] * 64,
        "limits": {"output_kb": 1024, "memory_mb": 3008, "wall_time_s": 10},
    }


def largest_result() -> ExecutionResult:
    """Both outputs at output_kb and 20 cases at their kept length (what the runner can answer)."""
    out = "o" * 1024 * 1024
    case = TestResult(verdict=TestVerdict.WRONG_ANSWER, stdout="c" * CASE_OUTPUT_CHARS, stderr="d" * CASE_OUTPUT_CHARS)
    tests = TestSummary(total=20, accepted=0, cases=[case] * 20)
    return fit(ExecutionResult(exit_code=1, stdout=out, stderr=out, tests=tests, wall_ms=9000))


def stored_item_size(stack_env: dict[str, Any], job_id: str) -> int:
    from chalicelib.adapters.aws import client

    table = stack_env["names"]["JobsTable"]
    return item_size(client("dynamodb").get_item(TableName=table, Key={"id": {"S": job_id}})["Item"])


def test_the_largest_job_and_its_largest_result_fit_their_item(stack_env: dict[str, Any]) -> None:
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    plain = create_key(deps, "acme", "enterprise")[0]
    body = largest_job()
    assert len(json.dumps(body)) < SETTINGS.max_body_bytes  # a body the API accepts
    job = submit_job(deps, plain, body).job
    assert job.spec_ref == payloads.spec_key(job.id)
    assert stored_item_size(stack_env, job.id) < 8 * 1024  # the bulk is in the bucket

    queued = payloads.with_whole_spec(deps, deps.jobs.get(job.id))
    assert queued.spec.stdin == body["stdin"] and len(queued.spec.tests) == 20
    running = start(deps, queued)
    assert not isinstance(running, str)
    result = largest_result()
    ended = end_job(deps, running, Finished(result))
    assert ended is not None and ended.job.result_ref == payloads.result_key(job.id)
    assert stored_item_size(stack_env, job.id) < 16 * 1024 < DYNAMODB_ITEM_LIMIT

    view = get_job(deps, authenticate(deps, plain), job.id)
    assert view.result is not None and view.result.stdout == result.stdout  # whole, from the bucket
    assert view.result.tests is not None and view.result.tests.cases[19].stderr == "d" * CASE_OUTPUT_CHARS


def test_a_result_too_large_to_answer_is_served_from_the_bucket_by_url(stack_env: dict[str, Any]) -> None:
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    plain = create_key(deps, "acme", "pro")[0]
    job = submit_job(deps, plain, {"runtime": "python", "source": "print(1)"}).job
    running = start(deps, deps.jobs.get(job.id))
    assert not isinstance(running, str)
    # Quotes: 4 MiB as the sandbox's JSON, twice that as an API answer (JSON in JSON): no answer holds it.
    control = fit(ExecutionResult(exit_code=0, stdout='"' * 1024 * 1024, stderr='"' * 1024 * 1024))
    assert not control.stdout_truncated
    end_job(deps, running, Finished(control))
    view = get_job(deps, authenticate(deps, plain), job.id)
    assert view.result is not None and view.result.full_result_url
    assert len(view.result.stdout) == payloads.PREVIEW_CHARS
    with urllib.request.urlopen(view.result.full_result_url, timeout=10) as response:  # moto on 127.0.0.1
        assert ExecutionResult.model_validate_json(response.read()) == control
