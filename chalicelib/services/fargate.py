"""Finishing a Fargate run: the ECS "Task State Change" event says the task stopped; its result was
uploaded by the task (by reference, since the task has no role)."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.domain.jobs import JobStatus
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import finish, retry_or_give_up

log = logging.getLogger(__name__)


def complete_from_event(deps: Deps, event: dict[str, Any]) -> str:
    """Finish the job whose task stopped; a task that left no result is a platform fault (retried)."""
    fargate: Any = deps.sandboxes.get("fargate")
    if fargate is None:
        return "no-fargate"
    from chalicelib.adapters.fargate_sandbox import parse_task_state_change

    stopped = parse_task_state_change(event)
    if stopped is None:
        return "ignored"
    job = deps.jobs.get(stopped.job_id)
    if job is None or job.status is not JobStatus.RUNNING:
        return "stale"
    result = fargate.fetch_result(job.id)
    if result is None:
        reason = f"the task stopped without a result: {stopped.stopped_reason}"
        delay = retry_or_give_up(deps, job, reason)
        if delay is not None:
            deps.queue.send(job, dedup_id=f"{job.id}#fargate{job.attempts}")
        return "retried" if delay is not None else "dead-lettered"
    done = finish(deps, job, result)
    return done.status.value if done else "discarded"
