"""Ending a task sandbox's run (Fargate): its platform says the task stopped; the result it left, if any,
ends the job, and a task that left none is a platform fault (retried with a new message)."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.domain.exits import Exit, Faulted, Finished, GaveUp
from chalicelib.domain.jobs import JobStatus
from chalicelib.metric_names import FARGATE_LAUNCH_FAILURES, SANDBOX_RESULT_REJECTED, TIER_DIMENSION
from chalicelib.sandbox.models import ResultRejected, SandboxRefused
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import end_job

log = logging.getLogger(__name__)


def complete_from_event(deps: Deps, event: dict[str, Any]) -> str:
    """End the job whose task stopped; returns what happened."""
    for sandbox in deps.tasks.values():
        stopped = sandbox.stopped(event)
        if stopped is None:
            continue
        job = deps.jobs.get(stopped.job_id)
        if job is None or job.status is not JobStatus.RUNNING or job.task_arn != stopped.task_arn:
            return "stale"  # ended meanwhile (cancelled, reaped), or an earlier attempt's task
        exit_: Exit
        try:
            result = sandbox.fetch_result(job.id)
        except ResultRejected as exc:  # forged or corrupted: counted and never retried
            deps.metric(SANDBOX_RESULT_REJECTED, 1, "Count", sandbox=job.sandbox or "fargate")
            log.error("sandbox result rejected", extra={"job_id": job.id, "error": str(exc)})
            exit_ = GaveUp(f"the {job.sandbox or 'fargate'} sandbox's answer failed its integrity check: {exc}")
        except SandboxRefused as exc:  # Fargate is the last resort: say why nothing ran
            exit_ = GaveUp(str(exc))
        else:
            if result is None and stopped.exit_code is None:
                # The container never ran (image pull, network setup): a launch failure, alarmed on.
                deps.metric(FARGATE_LAUNCH_FAILURES, 1, "Count", **{TIER_DIMENSION: job.tier})
            if result is None:
                exit_ = Faulted(f"the task stopped without a result: {stopped.stopped_reason}", message_held=False)
            else:
                exit_ = Finished(result)
        ended = end_job(deps, job, exit_)
        return ended.job.status.value if ended is not None else "discarded"
    return "ignored"
