"""A job on a task sandbox (Fargate): launched by the worker, ended by the task-stopped event, stopped by a
cancel or by the reaper past its deadline. On fakes (the adapter itself is tested on moto)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.config import settings_from_env
from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services import lifecycle
from chalicelib.services.fargate import complete_from_event
from chalicelib.services.keys import authenticate, create_key
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message
from tests.fakes import FakeClock, FakeTaskSandbox, make_deps

JOB = {"runtime": "python", "source": "print(1)", "sandbox": "fargate"}


@pytest.fixture
def deps() -> Any:
    deps = make_deps(settings_from_env({"CODERUNNER_SANDBOX_MODE": "cloud"}), FakeClock())
    deps.tasks["fargate"] = FakeTaskSandbox()
    return deps


@pytest.fixture
def key(deps: Any) -> str:
    return create_key(deps, "acme", "pro")[0]


def launch(deps: Any, key: str) -> tuple[str, str]:
    job_id = submit_job(deps, key, JOB).job.id
    assert handle_message(deps, {"job_id": job_id, "tier": "pro"}) == "launched"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.RUNNING and job.sandbox == "fargate" and job.task_arn
    assert deps.tasks["fargate"].launched[-1] == (job.task_arn, deps.tasks["fargate"].launched[-1][1])
    return job_id, job.task_arn


def test_the_task_event_finishes_the_job_from_its_result(deps: Any, key: str) -> None:
    job_id, arn = launch(deps, key)
    deps.tasks["fargate"].results[job_id] = ExecutionResult(exit_code=0, stdout="1\n", wall_ms=900)
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn)) == "succeeded"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result.stdout == "1\n"
    assert deps.counters.holders_of(job.key_id) == set()
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn)) == "stale"  # a repeat changes nothing
    assert complete_from_event(deps, {"detail-type": "something else"}) == "ignored"


def test_a_task_that_left_no_result_is_retried_with_a_new_message(deps: Any, key: str) -> None:
    job_id, arn = launch(deps, key)
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn)) == "queued"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 1 and job.due_at is not None
    assert deps.queue.sent[-1][3] == f"{job_id}#retry1"  # a fresh deduplication id for the new attempt
    assert deps.counters.tier_counts("pro") == (1, 0)


def test_an_earlier_attempts_task_does_not_end_the_current_one(deps: Any, key: str) -> None:
    job_id, arn = launch(deps, key)
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn + "-old")) == "stale"
    assert deps.jobs.get(job_id).status is JobStatus.RUNNING


def test_cancelling_a_running_task_stops_it(deps: Any, key: str) -> None:
    job_id, arn = launch(deps, key)
    caller = authenticate(deps, key)
    assert lifecycle.cancel(deps, caller, job_id).status is JobStatus.CANCELLED
    assert deps.tasks["fargate"].stopped_tasks == [arn]


def test_the_reaper_stops_a_task_past_its_deadline(deps: Any, key: str) -> None:
    job_id, arn = launch(deps, key)
    deps.clock.advance(3600)
    assert reap(deps).get("running_retried") == 1
    assert deps.tasks["fargate"].stopped_tasks == [arn]
