"""The one way a job leaves `queued` or `running`: `end_job` applies the plan `domain.exits.plan_exit` made.

Every caller goes through it: the worker (a result, a platform fault), the Fargate completion, the owner's
cancel, the reaper (a lost worker), the DLQ consumer (the platform gave up).

The state write is the commit point: a conditional write on the job's current status and attempt number. A
lost race has one meaning: the job is no longer where this exit found it, so whoever moved it owns what follows;
the loser only gives back its own attempt's slot (idempotent: a holder is `job_id#attempt`, so a late release
never frees a later attempt's slot) and returns None. Callers that act for a person (cancel) or for the
platform's last word (the DLQ) re-read and try again with `end_current`.

The consequences are separate writes made after the commit, in an order where a crash between any two leaves
only what the reaper repairs (services/reaper.py, one test per repair):
0. the announcement (local stack): a waiting GET returns, a cancelled run's watcher kills it (best effort:
   waiters poll now and then all the same);
1. tier counters: a missed update is a drift that `reconcile_counters` corrects;
2. the task is stopped before the slot is freed, so the owner's next job never overlaps a task still running
   (a missed stop: the reaper stops tasks of jobs past their lease, and a stopped task's result is discarded);
3. the slot: freed only once the job is no longer running, so the owner's cap holds (`release_leaked_slots`);
   freeing it wakes the owner's oldest parked job (services/parking.py; the reaper's `wake_parked` otherwise);
   step 6 goes in that same write (one write on the owner's item);
4. the next message (delay, resend, dead-letter): sent after the write, so a worker never receives a job that
   still looks running; a lost message leaves a queued job whose `due_at` passes (`_redrive_queued`);
5. the refund: the terminal write itself set `refunded`, so only the winner refunds, and never twice. A crash
   between that write and the refund loses the one refund (the owner is short one submit of quota): the one
   consequence the reaper does not repair, since finding such jobs would cost an index write on every job;
6. a terminal job leaves its key's jobs in flight (the wait estimate's key bound; `forget_stale_active`), and
   a run joins the key's statistics (the tier's go with the tier counters): with the slot's release when the
   job held one, else here;
7. metrics: best effort;
8. the job.finished event: the terminal write marked the job unpublished (`due_at` = finished + grace), so a
   crash before the event is produced leaves it to the reaper's `republish`. An event with nowhere to go (no
   webhook, no device: looked up before the terminal write) is not produced, and the job is not marked.
Each consequence is tried even if an earlier one failed (the state already changed); failures are logged and
counted (`ExitConsequenceFailed`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.errors import Conflict, NotFound, StaleState
from chalicelib.domain.exits import Cancelled, Exit, ExitPlan, Finished, RetryPolicy, plan_exit
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.services import delivery, parking, payloads
from chalicelib.services.deps import Deps
from chalicelib.services.estimates import key_scope
from chalicelib.services.ports import ApiKey

log = logging.getLogger(__name__)

END_TRIES = 5  # re-reads for an exit that must land (cancel, dead-letter) while the job keeps moving


@dataclass(frozen=True)
class Ended:
    """A job moved out of queued/running: the stored job and the plan that was applied."""

    job: Job
    plan: ExitPlan

    @property
    def retry_in_s(self) -> int | None:
        """For the worker: seconds until its held message should come back, if the job was re-queued."""
        message = self.plan.message
        return message.delay_s if message is not None and message.kind == "delay" else None


def log_transition(job: Job, **fields: Any) -> None:
    """One structured line per job transition (queued, running, and each exit): the job, its key and tier, its
    new status and attempt, how long it waited in the queue, and what the caller adds (run time, exit...)."""
    facts = {
        "job_id": job.id,
        "key_id": job.key_id,
        "tier": job.tier,
        "status": job.status.value,
        "attempt": job.attempts,
        "queue_wait_ms": job.queue_wait_ms,
    }
    log.info("job %s", job.status.value, extra={**facts, **fields})


def slot_holder(job: Job) -> str:
    """The slot holder of the job's current attempt."""
    return f"{job.id}#{job.attempts}"


def retry_policy(deps: Deps) -> RetryPolicy:
    s = deps.settings
    return RetryPolicy(
        max_attempts=s.max_attempts,
        retry_base_s=s.retry_base_s,
        orphan_after_s=s.orphan_after_s,
        throttle_cap_s=s.throttle_cap_s,
    )


def end_job(deps: Deps, job: Job, exit_: Exit) -> Ended | None:
    """Move `job` (as read by the caller) out of its state through `exit_`; None when it had moved on."""
    if isinstance(exit_, Finished) and exit_.result_ref is None:
        # A result too large for the job's record goes to the results bucket first; the record keeps a preview.
        exit_ = Finished(*payloads.stash_result(deps, job.id, exit_.result))
    plan = plan_exit(job, exit_, retry_policy(deps), deps.clock.now())
    where = delivery.destinations(deps, job) if plan.terminal else None
    if where is not None and not where.anywhere:
        plan = plan.without_event()  # one write ends it: no unpublished marker, no event id, no fan-out
    try:
        done = deps.jobs.transition(job, plan.status, plan.changes, expected_attempts=job.attempts)
    except StaleState:
        log.info("job %s: %s not applied, the job moved on", job.id, type(exit_).__name__, extra={"job_id": job.id})
        if job.status is JobStatus.RUNNING:
            _attempt(deps, "release_slot", parking.release, deps, job.key_id, slot_holder(job))
        return None
    _apply(deps, job, done, plan, where)
    log_transition(done, exit=type(exit_).__name__, run_ms=plan.run_ms)
    return Ended(done, plan)


def end_current(deps: Deps, job_id: str, exit_: Exit, owner: str | None = None) -> Ended | None:
    """Apply `exit_` to the job as it is now, re-reading after a lost race; None if it is (or becomes)
    terminal first. NotFound for an unknown job (or another owner's, when `owner` is given)."""
    for _ in range(END_TRIES):
        job = deps.jobs.get(job_id) if job_id else None
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(f"no job '{job_id}'")
        if job.status.terminal:
            return None
        ended = end_job(deps, job, exit_)
        if ended is not None:
            return ended
    raise Conflict(f"job '{job_id}' is changing state; try again")


def _apply(deps: Deps, before: Job, done: Job, plan: ExitPlan, where: delivery.Destinations | None) -> None:
    """The consequences of a committed exit, in the order the module docstring explains."""
    # First the announcement (local stack: a waiting GET returns, a cancelled run's watcher kills it).
    _attempt(deps, "signal", deps.signals.job_changed, done.id)
    run = _held(before, done, plan)
    if plan.queued_delta or plan.running_delta or run is not None:
        # The tier's counters and its run-time statistics change in one write.
        counts = (before.tier, plan.queued_delta, plan.running_delta, run)
        _attempt(deps, "tier_counters", deps.counters.adjust_tier, *counts)
    if plan.stop_task is not None:
        _attempt(deps, "stop_task", _stop_task, deps, before, plan.stop_task)
    if plan.release_slot:
        # A terminal job leaves its key's jobs in flight, and its run joins the key's statistics, in the same
        # write (step 6).
        ended = before.id if done.status.terminal else None
        holder = slot_holder(before)
        _attempt(deps, "release_slot", parking.release, deps, before.key_id, holder, ended, run)
    if before.parked:  # a parked job cancelled (or given up): one fewer waits for the owner's slots
        _attempt(deps, "unpark", deps.counters.count_parked, before.key_id, -1)
    message = plan.message
    if message is not None and message.kind == "resend":
        _attempt(deps, "resend", deps.queue.send, done, message.dedup_id)
    elif message is not None and message.kind == "dead_letter":
        _attempt(deps, "dead_letter", deps.queue.send_to_dlq, before.tier, before.id, message.reason)
    if plan.refund:
        _attempt(deps, "refund", deps.keys.refund, before.key_hash, before.charged_minute, before.charged_day)
    _for_estimates(deps, before, done, plan)
    for name, value, unit, dims in plan.metrics:
        deps.metric(name, value, unit, **dims)
    if plan.terminal and plan.event:
        # Its one job.finished event (webhook, devices, inbox). Never raises: the terminal write left the job
        # marked unpublished, and the reaper's `republish` produces the event if this does not.
        delivery.job_finished(deps, done, where)


def _held(before: Job, done: Job, plan: ExitPlan) -> tuple[int, float] | None:
    """(ms, when) a run held its worker and slot, start to finish with the sandbox's setup (the program's own
    wall time when the start is not known): what the wait estimate learns from; None without a run."""
    if plan.run_ms is None or done.finished_at is None:
        return None
    finished = done.finished_at
    return (plan.run_ms if before.started_at is None else int((finished - before.started_at) * 1000)), finished


def _for_estimates(deps: Deps, before: Job, done: Job, plan: ExitPlan) -> None:
    """What the key's part of the wait estimate learns from an exit: a terminal job leaves the key's jobs in
    flight, and a run joins the key's statistics (the tier's went with its counters)."""
    if plan.release_slot:
        return  # both went with the slot's release, in its write
    if done.status.terminal:
        _attempt(deps, "forget_active", deps.counters.forget_active, before.key_id, before.id)
    run = _held(before, done, plan)
    if run is not None:
        _attempt(deps, "record_run", deps.counters.record_run, key_scope(before.key_id), *run)


def _attempt(deps: Deps, what: str, action: Callable[..., Any], *args: Any) -> None:
    try:
        action(*args)
    except Exception:  # noqa: BLE001 - the state changed already; the reaper repairs what this leaves
        log.exception("exit consequence failed", extra={"consequence": what})
        deps.metric("ExitConsequenceFailed", consequence=what)


def _stop_task(deps: Deps, job: Job, reason: str) -> None:
    sandbox = deps.tasks.get(job.sandbox or "")
    if sandbox is not None and job.task_arn:
        sandbox.stop(job.task_arn, reason)


def owned_job(deps: Deps, key: ApiKey, job_id: str, consistent: bool = True) -> Job:
    """The caller's job; NotFound for an unknown id and for another caller's job alike."""
    job = deps.jobs.get(job_id, consistent) if job_id else None
    if job is None or job.owner != key.owner:
        raise NotFound(f"no job '{job_id}'")
    return job


def cancel(deps: Deps, key: ApiKey, job_id: str) -> Job:
    """Cancel a queued or running job: a queued one is skipped when its message arrives, a local run is
    killed by its worker, a Fargate task is stopped, a Lambda run finishes and its result is discarded."""
    ended = end_current(deps, job_id, Cancelled(), owner=key.owner)
    if ended is None:
        job = owned_job(deps, key, job_id)
        raise Conflict(f"job '{job_id}' is already {job.status.value}", {"status": job.status.value})
    return ended.job
