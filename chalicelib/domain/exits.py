"""How a job leaves `queued` or `running`, and everything that follows from it, decided in one pure function.

An exit is a typed fact about what happened to the job (the sandbox answered, the platform failed, the owner
cancelled, the reaper found it past its lease, the platform gave up). `plan_exit` turns the job and its exit
into an `ExitPlan`: the state to write and every consequence (tier counters, the running slot, a refund, the
next message, the task to stop, run statistics). `services.lifecycle.end_job` applies a plan; nothing else
moves a job out of `queued` or `running`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from chalicelib.domain.events import PUBLISH_GRACE_S
from chalicelib.domain.jobs import Job, JobStatus, status_for
from chalicelib.sandbox.models import ExecutionResult


@dataclass(frozen=True)
class Finished:
    """The sandbox ran the job and answered (the user's program succeeded or failed: a result either way).
    `result_ref`: the whole result is stored apart and `result` is its preview (services/payloads.py)."""

    result: ExecutionResult
    result_ref: str | None = None


@dataclass(frozen=True)
class Faulted:
    """The platform failed this attempt (sandbox unavailable or throttled, an AWS fault, a task without a
    result). `message_held`: the caller still holds the job's queue message (the worker does; the Fargate
    completion does not, so a retry needs a new message)."""

    reason: str
    message_held: bool = True


@dataclass(frozen=True)
class Throttled:
    """The sandbox refused the run for want of capacity now (Lambda TooManyRequests, a dependency it needs
    throttled): a platform back-off, never an attempt, and never a reason to end the job. The attempt is given
    back and the held message comes back after a capped exponential delay; `renew`: the message has used up its
    receives but one (the queues' maxReceiveCount), so a fresh message replaces it instead."""

    reason: str
    renew: bool = False


@dataclass(frozen=True)
class Cancelled:
    """The owner cancelled the job."""


@dataclass(frozen=True)
class Lost:
    """The reaper found the job running past its lease: its worker died or hung."""


@dataclass(frozen=True)
class GaveUp:
    """The platform gave up on the job (its message reached the tier's dead-letter queue)."""

    reason: str


Exit = Finished | Faulted | Throttled | Cancelled | Lost | GaveUp


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    retry_base_s: int
    orphan_after_s: int  # a queued job whose message did not come back by then is re-sent by the reaper
    throttle_cap_s: int = 60  # the longest back-off after a throttle

    def throttle_delay(self, throttles: int) -> int:
        """Seconds to hold a job back after its `throttles`-th throttle: base**n, capped."""
        return int(min(self.throttle_cap_s, self.retry_base_s ** min(throttles, 16)))


@dataclass(frozen=True)
class NextMessage:
    """What happens to the job's queue message: the held one comes back after a delay, a new one is sent
    (with its own deduplication id), or the job is dead-lettered (the DLQ consumer's hook)."""

    kind: Literal["delay", "resend", "dead_letter"]
    delay_s: int = 0
    dedup_id: str = ""
    reason: str = ""


Metric = tuple[str, float, str, dict[str, str]]  # name, value, unit, dimensions


@dataclass(frozen=True)
class ExitPlan:
    """A state change and all its consequences. Deltas are for the tier's (queued, running) counters."""

    status: JobStatus
    changes: dict[str, Any]
    queued_delta: int = 0
    running_delta: int = 0
    release_slot: bool = False
    stop_task: str | None = None  # why the job's task (if it has one) is stopped
    refund: bool = False
    run_ms: int | None = None
    message: NextMessage | None = None
    metrics: list[Metric] = field(default_factory=list)
    event: bool = True  # a terminal job's job.finished event is produced (it has somewhere to go)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    def without_event(self) -> ExitPlan:
        """This terminal plan for a job whose event has nowhere to go (no webhook, no device): the job is not
        marked unpublished (no `due_at`), so it leaves the active index in its terminal write and no event is
        produced."""
        return replace(self, changes={**self.changes, "due_at": None}, event=False)


def plan_exit(job: Job, exit_: Exit, policy: RetryPolicy, now: float) -> ExitPlan:
    """The plan for `job` (queued or running) leaving its state through `exit_` at `now`."""
    if isinstance(exit_, Finished):
        return _finished(job, exit_.result, now, exit_.result_ref)
    if isinstance(exit_, Faulted):
        return _retry_or_error(job, exit_.reason, policy, now, held=exit_.message_held)
    if isinstance(exit_, Throttled):
        return _back_off(job, exit_, policy, now)
    if isinstance(exit_, Lost):
        return _retry_or_error(job, "worker lost past its deadline", policy, now, held=False)
    if isinstance(exit_, Cancelled):
        return _terminal(job, JobStatus.CANCELLED, now, {}, why="cancelled by the user")
    return _terminal(job, JobStatus.ERROR, now, {"error": exit_.reason}, refund=True, why=exit_.reason)


def _leaving(job: Job, why: str) -> dict[str, Any]:
    """Counter deltas, slot release and task stop for leaving the job's current state."""
    if job.status is JobStatus.RUNNING:
        return {"running_delta": -1, "release_slot": True, "stop_task": why if job.task_arn else None}
    return {"queued_delta": -1}


def _terminal(
    job: Job, status: JobStatus, now: float, changes: dict[str, Any], *, refund: bool = False, why: str = "ended"
) -> ExitPlan:
    refund = refund and bool(job.key_hash) and not job.refunded
    if refund:
        changes = {**changes, "refunded": True}  # written with the state: only the winner of the race refunds
    return ExitPlan(
        status=status,
        # due_at: the job stays on the reaper's list, marked unpublished, until its event is produced.
        changes={"finished_at": now, "lease_until": None, "due_at": now + PUBLISH_GRACE_S, **changes},
        refund=refund,
        metrics=[("JobsFinished", 1, "Count", {"tier": job.tier, "status": status.value})],
        **_leaving(job, why),
    )


def _finished(job: Job, result: ExecutionResult, now: float, result_ref: str | None = None) -> ExitPlan:
    changes: dict[str, Any] = {"result": result, "result_ref": result_ref} if result_ref else {"result": result}
    plan = _terminal(job, status_for(result), now, changes)
    metrics: list[Metric] = [*plan.metrics, ("RunTime", result.wall_ms, "Milliseconds", {"tier": job.tier})]
    if job.started_at is not None:
        overhead = max(0, int((now - job.started_at) * 1000) - result.wall_ms)
        metrics.append(("SandboxOverhead", overhead, "Milliseconds", {"tier": job.tier, "sandbox": result.sandbox}))
    return replace(plan, run_ms=result.wall_ms, metrics=metrics)


def _back_off(job: Job, exit_: Throttled, policy: RetryPolicy, now: float) -> ExitPlan:
    """Back to the queue with the attempt given back (a throttle is not the job's try) after a capped delay."""
    throttles = job.throttles + 1
    delay = policy.throttle_delay(throttles)
    if exit_.renew:
        message = NextMessage("resend", dedup_id=f"{job.id}#throttle{throttles}")
    else:
        message = NextMessage("delay", delay_s=delay)
    return ExitPlan(
        status=JobStatus.QUEUED,
        changes={
            "attempts": max(0, job.attempts - 1),
            "throttles": throttles,
            "lease_until": None,
            "error": f"{exit_.reason}; waiting for sandbox capacity",
            "due_at": now + delay + policy.orphan_after_s,
        },
        queued_delta=1,
        message=message,
        metrics=[("SandboxThrottled", 1, "Count", {"tier": job.tier})],
        **_leaving(job, exit_.reason),
    )


def _retry_or_error(job: Job, reason: str, policy: RetryPolicy, now: float, *, held: bool) -> ExitPlan:
    """Back to the queue while attempts remain; else `error` (refunded) and the dead-letter hook."""
    fault: list[Metric] = [("PlatformFaults", 1, "Count", {"tier": job.tier})]
    if job.attempts >= policy.max_attempts:
        error = f"{reason} (after {job.attempts} attempts)"
        plan = _terminal(job, JobStatus.ERROR, now, {"error": error}, refund=True, why=reason)
        message = NextMessage("dead_letter", reason=reason)
        return replace(plan, message=message, metrics=fault + plan.metrics)
    delay = int(policy.retry_base_s**job.attempts)
    if held:
        message = NextMessage("delay", delay_s=delay)
    else:
        message = NextMessage("resend", dedup_id=f"{job.id}#retry{job.attempts}")
    return ExitPlan(
        status=JobStatus.QUEUED,
        # A queued job is always due for the reaper's orphan check: if the message is lost with its worker,
        # the job is sent again rather than left queued forever.
        changes={"lease_until": None, "error": f"{reason}; retrying", "due_at": now + delay + policy.orphan_after_s},
        queued_delta=1,
        message=message,
        metrics=fault,
        **_leaving(job, reason),
    )
