"""The worker, cancellation, retries, the DLQ path and the reaper, on fakes."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.errors import Conflict, DependencyUnavailable, NotFound
from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionResult, FailureReason, SandboxUnavailable
from chalicelib.services import lifecycle
from chalicelib.services.keys import authenticate, create_key
from chalicelib.services.reaper import dead_letter
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import RetryLater, handle_message
from tests.fakes import FakeSandbox

JOB = {"runtime": "python", "source": "print(1)"}


def submit(deps: Any, key: str, body: dict | None = None) -> str:
    return submit_job(deps, key, body or JOB).job.id


def deliver(deps: Any, job_id: str) -> str:
    return handle_message(deps, {"job_id": job_id, "tier": "free"})


def used_today(deps: Any) -> int:
    return next(iter(deps.keys.keys.values())).quota.d_n


def test_a_delivered_job_runs_once_and_succeeds(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    assert deliver(deps, job_id) == "succeeded"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 1 and job.result.stdout == "ok\n"
    assert job.started_at is not None and job.finished_at is not None
    assert deps.counters.tier_counts("free") == (0, 0)
    assert deps.counters.slot_holders()[job.key_id] == set()


def test_duplicate_delivery_never_runs_twice(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    deliver(deps, job_id)
    assert deliver(deps, job_id) == "skipped:succeeded"
    assert len(deps.sandboxes["local"].calls) == 1


def test_user_failures_are_results_not_retries(deps: Any, key: str) -> None:
    deps.sandboxes["local"] = FakeSandbox(ExecutionResult(exit_code=3, reason=FailureReason.EXIT_CODE))
    job_id = submit(deps, key)
    assert deliver(deps, job_id) == "failed"
    assert deps.jobs.get(job_id).attempts == 1 and deps.queue.dlq == []


def test_timeout_is_timed_out(deps: Any, key: str) -> None:
    deps.sandboxes["local"] = FakeSandbox(ExecutionResult(signal="SIGKILL", reason=FailureReason.WALL_TIME))
    job_id = submit(deps, key)
    assert deliver(deps, job_id) == "timed_out"


def test_a_key_at_its_concurrency_waits_parked_without_running(deps: Any, key: str) -> None:
    ids = [submit(deps, key) for _ in range(3)]
    owner = deps.jobs.get(ids[0]).key_id
    deps.counters.acquire_slot(owner, "other#1", 2)
    deps.counters.acquire_slot(owner, "other2#1", 2)
    assert deliver(deps, ids[0]) == "parked"  # its message is deleted: waiting spends no SQS receive
    job = deps.jobs.get(ids[0])
    assert job.status is JobStatus.QUEUED and job.parked and job.attempts == 0
    assert deps.sandboxes["local"].calls == []
    assert deliver(deps, ids[0]) == "skipped:parked"  # a late duplicate of its old message


@pytest.mark.parametrize(
    "fault",
    [
        SandboxUnavailable("the sandbox crashed"),
        DependencyUnavailable("dynamodb failed: InternalServerError"),
    ],
)
def test_platform_faults_retry_with_backoff_then_error_refund_and_dead_letter(
    deps: Any, key: str, fault: Exception
) -> None:
    sandbox = FakeSandbox()
    sandbox.fail_with = [fault, fault, fault]
    deps.sandboxes["local"] = sandbox
    job_id = submit(deps, key)
    assert used_today(deps) == 1
    delays = []
    for _ in range(2):
        with pytest.raises(RetryLater) as err:
            deliver(deps, job_id)
        delays.append(err.value.delay_s)
        assert deps.jobs.get(job_id).status is JobStatus.QUEUED
    assert delays == [2, 4]  # exponential
    assert deliver(deps, job_id) == "error"  # attempts spent: error, refunded, and handed to the DLQ hook
    assert deps.queue.dlq[0][1] == job_id
    assert dead_letter(deps, {"job_id": job_id, "reason": deps.queue.dlq[0][2]}) == "skipped"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.ERROR and job.attempts == 3 and job.error.startswith("platform fault")
    assert used_today(deps) == 0  # refunded
    assert deps.counters.tier_counts("free") == (0, 0)
    dead_letter(deps, {"job_id": job_id})  # a second DLQ delivery changes nothing
    assert used_today(deps) == 0


def test_a_fault_then_success_keeps_the_attempt_count(deps: Any, key: str) -> None:
    sandbox = FakeSandbox()
    sandbox.fail_with = [SandboxUnavailable("busy")]
    deps.sandboxes["local"] = sandbox
    job_id = submit(deps, key)
    with pytest.raises(RetryLater):
        deliver(deps, job_id)
    assert deliver(deps, job_id) == "succeeded"
    assert deps.jobs.get(job_id).attempts == 2


def test_cancel_queued_job_is_skipped_when_delivered(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    caller = authenticate(deps, key)
    assert lifecycle.cancel(deps, caller, job_id).status is JobStatus.CANCELLED
    assert deliver(deps, job_id) == "skipped:cancelled"
    assert deps.sandboxes["local"].calls == []
    assert deps.counters.tier_counts("free") == (0, 0)
    with pytest.raises(Conflict):
        lifecycle.cancel(deps, caller, job_id)


def test_cancel_running_job_discards_its_result(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    caller = authenticate(deps, key)

    class CancelDuringRun(FakeSandbox):
        def run(self, request: Any, cancel: Any = None) -> ExecutionResult:
            lifecycle.cancel(deps, caller, job_id)
            return super().run(request, cancel)

    deps.sandboxes["local"] = CancelDuringRun()
    assert deliver(deps, job_id) == "discarded"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.CANCELLED and job.result is None
    assert deps.counters.slot_holders()[job.key_id] == set()
    assert deps.counters.tier_counts("free") == (0, 0)


def test_another_callers_job_is_404_like_an_unknown_one(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    other = authenticate(deps, create_key(deps, "globex", "free")[0])
    with pytest.raises(NotFound) as a:
        lifecycle.cancel(deps, other, job_id)
    with pytest.raises(NotFound) as b:
        lifecycle.cancel(deps, other, "nope")
    assert a.value.message.replace(job_id, "X") == b.value.message.replace("nope", "X")


def test_a_malformed_message_is_dropped_not_retried_into_the_dlq(deps: Any, key: str) -> None:
    from chalicelib.services.batch import process_jobs
    from devtools.worker import lambda_sqs_record

    job_id = submit(deps, key)
    good = {"MessageId": "m2", "ReceiptHandle": "r2", "Body": f'{{"job_id": "{job_id}", "tier": "free"}}'}
    bad = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "not json"}
    arn = "arn:aws:sqs:us-east-1:123456789012:code-runner-dev-free.fifo"
    response = process_jobs(deps, {"Records": [lambda_sqs_record(bad, arn), lambda_sqs_record(good, arn)]})
    assert response["batchItemFailures"] == []  # acknowledged: a retry could never parse it
    assert deps.jobs.get(job_id).status is JobStatus.SUCCEEDED
