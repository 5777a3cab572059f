"""A job on the Fargate sandbox: launched by the worker, finished by the ECS task-state-change event,
stopped by a cancel or by the reaper past its deadline. On fakes (the adapter itself is tested on moto)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult
from chalicelib.services import lifecycle
from chalicelib.services.fargate import complete_from_event
from chalicelib.services.keys import authenticate, create_key
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message
from tests.fakes import FakeClock, make_deps

JOB = {"runtime": "python", "source": "print(1)", "sandbox": "fargate"}


class FakeFargate:
    def __init__(self) -> None:
        self.launched: list[ExecutionRequest] = []
        self.stopped: list[tuple[str, str]] = []
        self.results: dict[str, ExecutionResult] = {}

    def launch(self, request: ExecutionRequest) -> str:
        self.launched.append(request)
        return f"arn:aws:ecs:us-east-1:123456789012:task/sandbox/{request.job_id}"

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        return self.results.get(job_id)

    def stop(self, task_arn: str, reason: str) -> None:
        self.stopped.append((task_arn, reason))


@pytest.fixture
def deps() -> Any:
    deps = make_deps(Settings(sandbox_mode="cloud"), FakeClock())
    deps.sandboxes["fargate"] = FakeFargate()
    return deps


@pytest.fixture
def key(deps: Any) -> str:
    return create_key(deps, "acme", "pro")[0]


def stopped_event(job_id: str) -> dict[str, Any]:
    return {
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "detail": {
            "taskArn": f"arn:aws:ecs:us-east-1:123456789012:task/sandbox/{job_id}",
            "lastStatus": "STOPPED",
            "startedBy": job_id,
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "sandbox", "exitCode": 0}],
        },
    }


def launch(deps: Any, key: str) -> str:
    job_id = submit_job(deps, key, JOB).job.id
    assert handle_message(deps, {"job_id": job_id, "tier": "pro"}) == "launched"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.RUNNING and job.sandbox == "fargate" and job.task_arn.endswith(job_id)
    return job_id


def test_the_task_event_finishes_the_job_from_its_result(deps: Any, key: str) -> None:
    job_id = launch(deps, key)
    deps.sandboxes["fargate"].results[job_id] = ExecutionResult(exit_code=0, stdout="1\n", wall_ms=900)
    assert complete_from_event(deps, stopped_event(job_id)) == "succeeded"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.SUCCEEDED and job.result.stdout == "1\n"
    assert deps.counters.holders_of(job.key_id) == set()
    assert complete_from_event(deps, stopped_event(job_id)) == "stale"  # a repeated event changes nothing


def test_a_task_that_left_no_result_is_retried(deps: Any, key: str) -> None:
    job_id = launch(deps, key)
    assert complete_from_event(deps, stopped_event(job_id)) == "retried"
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 1
    assert deps.queue.sent[-1][3] == f"{job_id}#fargate1"  # a fresh deduplication id for the new attempt


def test_cancelling_a_running_task_stops_it(deps: Any, key: str) -> None:
    job_id = launch(deps, key)
    caller = authenticate(deps, key)
    assert lifecycle.cancel(deps, caller, job_id).status is JobStatus.CANCELLED
    assert deps.sandboxes["fargate"].stopped == [(deps.jobs.get(job_id).task_arn, "cancelled by the user")]


def test_the_reaper_stops_a_task_past_its_deadline(deps: Any, key: str) -> None:
    job_id = launch(deps, key)
    deps.clock.advance(3600)
    assert reap(deps).get("running_retried") == 1
    assert deps.sandboxes["fargate"].stopped == [
        (f"arn:aws:ecs:us-east-1:123456789012:task/sandbox/{job_id}", "past its deadline")
    ]
