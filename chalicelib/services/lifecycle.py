"""Moving a job to its end: finish with a result, retry after a platform fault, give up (DLQ), cancel.

Rule for the counters: whoever makes a transition out of `running` decrements the tier's running count;
slots are released idempotently by anyone. A slot holder is `job_id#attempt`, so a late release from an
earlier attempt never frees the slot of a later one.
"""

from __future__ import annotations

import logging

from chalicelib.domain.errors import Conflict, NotFound, StaleState
from chalicelib.domain.jobs import Job, JobStatus, status_for
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services.deps import Deps
from chalicelib.services.ports import ApiKey

log = logging.getLogger(__name__)


def slot_holder(job: Job) -> str:
    return f"{job.id}#{job.attempts}"


def finish(deps: Deps, job: Job, result: ExecutionResult) -> Job | None:
    """Store the run's result as the job's terminal state; None if the job moved on (cancelled, reaped)."""
    status = status_for(result)
    now = deps.clock.now()
    try:
        done = deps.jobs.transition(
            job,
            status,
            {"finished_at": now, "result": result, "lease_until": None},
            expected_attempts=job.attempts,
        )
    except StaleState:
        log.info("result discarded: the job moved on while it ran", extra={"job_id": job.id})
        deps.counters.release_slot(job.key_id, slot_holder(job))
        return None
    deps.signals.job_changed(job.id)
    deps.counters.job_finished(job.tier)
    deps.counters.release_slot(job.key_id, slot_holder(job))
    deps.counters.record_run(job.tier, result.wall_ms, now)
    deps.metric("JobsFinished", tier=job.tier, status=status.value)
    deps.metric("RunTime", result.wall_ms, "Milliseconds", tier=job.tier)
    if job.started_at is not None:
        overhead = max(0, int((now - job.started_at) * 1000) - result.wall_ms)
        deps.metric("SandboxOverhead", overhead, "Milliseconds", tier=job.tier, sandbox=result.sandbox)
    return done


def retry_or_give_up(deps: Deps, job: Job, reason: str) -> int | None:
    """After a platform fault: put the job back in the queue and return the backoff in seconds, or, when its
    attempts are spent, hand it to the tier's DLQ (whose consumer marks it `error`) and return None."""
    try:
        deps.jobs.transition(
            job, JobStatus.QUEUED, {"lease_until": None, "error": reason}, expected_attempts=job.attempts
        )
    except StaleState:
        deps.counters.release_slot(job.key_id, slot_holder(job))
        return 0  # cancelled or reaped meanwhile: nothing left to do for this message
    deps.counters.job_requeued(job.tier)
    deps.counters.release_slot(job.key_id, slot_holder(job))
    deps.metric("PlatformFaults", tier=job.tier)
    if job.attempts < deps.settings.max_attempts:
        return int(deps.settings.retry_base_s**job.attempts)
    deps.queue.send_to_dlq(job.tier, job.id, reason)
    return None


def mark_error(deps: Deps, job_id: str, reason: str) -> Job | None:
    """The DLQ consumer: the platform gave up on the job; mark it `error` and refund the user's quota."""
    job = deps.jobs.get(job_id)
    if job is None or job.status.terminal:
        return None
    try:
        done = deps.jobs.transition(
            job,
            JobStatus.ERROR,
            {"finished_at": deps.clock.now(), "error": reason, "lease_until": None},
            expected_attempts=job.attempts,
        )
    except StaleState:
        return mark_error(deps, job_id, reason)  # it moved (e.g. started): look again
    deps.signals.job_changed(job_id)
    if job.status is JobStatus.QUEUED:
        deps.counters.release_queue_place(job.tier)
    else:
        deps.counters.job_finished(job.tier)
    deps.counters.release_slot(job.key_id, slot_holder(job))
    refund(deps, done)
    deps.metric("JobsFinished", tier=job.tier, status="error")
    return done


def refund(deps: Deps, job: Job) -> None:
    """Give back the quota a job was charged (only once)."""
    if job.key_hash and not job.refunded and deps.jobs.set_fields(job.id, {"refunded": True}, job.status):
        deps.keys.refund(job.key_hash, job.charged_minute, job.charged_day)


def owned_job(deps: Deps, key: ApiKey, job_id: str) -> Job:
    """The caller's job; NotFound for an unknown id and for another caller's job alike."""
    job = deps.jobs.get(job_id) if job_id else None
    if job is None or job.owner != key.owner:
        raise NotFound(f"no job '{job_id}'")
    return job


def cancel(deps: Deps, key: ApiKey, job_id: str) -> Job:
    """Cancel a queued or running job. A running local run is killed by its worker's watcher; a Fargate task
    is stopped; a Lambda run finishes but its result is discarded."""
    for _ in range(5):
        job = owned_job(deps, key, job_id)
        if job.status.terminal:
            raise Conflict(f"job '{job_id}' is already {job.status.value}", {"status": job.status.value})
        try:
            done = deps.jobs.transition(
                job,
                JobStatus.CANCELLED,
                {"finished_at": deps.clock.now(), "lease_until": None},
                expected_attempts=job.attempts,
            )
        except StaleState:
            continue
        deps.signals.job_changed(job_id)  # wakes the watcher of the worker running it, and waiting GETs
        if job.status is JobStatus.QUEUED:
            deps.counters.release_queue_place(job.tier)
        else:
            deps.counters.job_finished(job.tier)
            deps.counters.release_slot(job.key_id, slot_holder(job))
            _stop_task(deps, job, "cancelled by the user")
        deps.metric("JobsFinished", tier=job.tier, status="cancelled")
        return done
    raise Conflict(f"job '{job_id}' is changing state; try again")


def _stop_task(deps: Deps, job: Job, reason: str) -> None:
    fargate = deps.sandboxes.get("fargate")
    if job.task_arn and fargate is not None:
        try:
            fargate.stop(job.task_arn, reason)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - the reaper stops tasks past their deadline anyway
            log.exception("could not stop task", extra={"job_id": job.id})
