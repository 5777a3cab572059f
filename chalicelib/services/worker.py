"""The worker's use case: take one queued job off its message and run it in a sandbox.

Duplicate deliveries are harmless because a job starts only through the conditional `queued -> running`
write (with the attempt number it expects): the second delivery finds the job running or done and is
acknowledged without running anything. A job whose owner has every slot taken is parked (services/parking.py)
and its message deleted; a throttled sandbox hands the job back without spending an attempt.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from chalicelib.domain.errors import DependencyThrottled, PlatformFault, StaleState
from chalicelib.domain.exits import Faulted, Finished, GaveUp, Throttled
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.metric_names import FARGATE_LAUNCH_FAILURES, SANDBOX_RESULT_REJECTED, TIER_DIMENSION
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    ResultRejected,
    SandboxRefused,
    SandboxUnavailable,
)
from chalicelib.sandbox.runtimes import UnknownRuntime
from chalicelib.sandbox.selection import SandboxKind, pick_sandbox
from chalicelib.services import catalog, parking, payloads
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import Ended, end_job, log_transition, slot_holder
from chalicelib.services.ports import SyncSandbox, TaskSandbox, WaitChanged

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5
CANCEL_SAFETY_POLL_S = 5.0  # where changes are announced (local stack): re-read at least this often all the same


class RetryLater(Exception):
    """Leave the message in the queue and try it again after `delay_s` (its message group waits)."""

    def __init__(self, delay_s: int, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


def handle_message(deps: Deps, message: dict[str, Any], receives: int = 1) -> str:
    """Process one queue message; returns what happened. Raises RetryLater to keep the message. `receives`:
    how often SQS has delivered this message (a throttled job renews a message about to be dead-lettered)."""
    job = deps.jobs.get(str(message.get("job_id", "")))
    if job is None:
        log.warning("message for an unknown job dropped", extra={"job_id": message.get("job_id")})
        return "unknown"
    if job.status is not JobStatus.QUEUED:
        # terminal (cancelled while queued, or a duplicate), or running under another worker's lease
        return f"skipped:{job.status.value}"
    if job.parked:
        return "skipped:parked"  # a late duplicate of the message it had before it was parked
    job = payloads.with_whole_spec(deps, job)
    try:
        kind = pick(deps, job)
    except ValueError as exc:
        # e.g. the only sandbox with the job's runtime refuses to run user code on this stage now
        ended = end_job(deps, job, GaveUp(f"no sandbox can run this job: {exc}"))
        return ended.job.status.value if ended is not None else "discarded"
    started = start(deps, job, kind)
    if isinstance(started, str):
        return started
    return run(deps, started, renew=receives >= deps.settings.max_receive_count - 1)


def pick(deps: Deps, job: Job) -> SandboxKind:
    """The sandbox for this attempt, from what each sandbox offers now (a refusing one is skipped by `auto`)."""
    spec = job.spec
    return pick_sandbox(spec.sandbox, spec.limits, catalog.offers(deps), spec.runtime, spec.tool, len(spec.tests))


def start(deps: Deps, job: Job, kind: SandboxKind | None = None) -> Job | str:
    """Take one of the owner's slots and move the job to running in sandbox `kind` (default: `pick`).
    Otherwise what happened instead: "parked" (every slot taken), "yielded" (an older job of the owner was
    parked: it gets the slot), "lost-race"."""
    kind = kind or pick(deps, job)
    policy = deps.settings.tier(job.tier)
    next_attempt = job.model_copy(update={"attempts": job.attempts + 1})
    holder = slot_holder(next_attempt)
    slots = deps.counters.acquire_slot(job.key_id, holder, policy.concurrency)
    if slots is None:
        return parking.park(deps, job, policy.concurrency)
    if parking.yields_to_parked(deps, job, slots):
        # Park first, then free the slot: the release wakes the oldest parked job, which is older than this one.
        outcome = parking.park(deps, job, policy.concurrency)
        parking.release(deps, job.key_id, holder)
        return "yielded" if outcome == "parked" else outcome
    now = deps.clock.now()
    # A task sandbox's lease also allows for its task to start (an image pull is not a lost worker).
    grace = deps.settings.lease_grace_s + (deps.settings.task_start_grace_s if kind in deps.tasks else 0)
    lease_until = now + job.spec.limits.wall_time_s * max(1, len(job.spec.tests)) + grace
    try:
        running = deps.jobs.transition(
            job,
            JobStatus.RUNNING,
            {
                "started_at": now,
                "attempts": job.attempts + 1,
                "sandbox": kind,
                "error": None,
                "lease_until": lease_until,
                "due_at": lease_until,
            },
            expected_attempts=job.attempts,
        )
    except StaleState:
        parking.release(deps, job.key_id, holder)
        return "lost-race"
    except PlatformFault:
        # Throttled or unreachable: nothing started. Give the slot back now (the reaper would, later) and let
        # the message come back after its visibility timeout.
        try:
            parking.release(deps, job.key_id, holder)
        except PlatformFault:
            log.warning("slot release failed; the reaper frees it", extra={"job_id": job.id})
        raise
    try:
        deps.counters.adjust_tier(job.tier, queued=-1, running=1)
    except PlatformFault:
        # The job is running now whatever the counter says: run it; the reaper corrects the drift.
        log.warning("tier counter update failed; the reaper reconciles it", extra={"job_id": job.id})
    deps.signals.job_changed(job.id)  # a waiting GET shows it running
    deps.metric("QueueWait", running.queue_wait_ms or 0, "Milliseconds", tier=job.tier)
    log_transition(running, sandbox=kind)
    return running.model_copy(update={"spec": job.spec})  # the whole spec, read back when stored apart


def run(deps: Deps, job: Job, renew: bool = False) -> str:
    """Run a started job in its sandbox and end it with the outcome; platform faults retry with backoff, a
    throttle backs off without spending the attempt (`renew`: with a fresh message)."""
    _append_run_log(deps, job)
    request = ExecutionRequest(
        job_id=job.id,
        runtime=job.spec.runtime,
        tool=job.spec.tool,
        files=job.spec.files,
        args=job.spec.args,
        stdin=job.spec.stdin,
        tests=job.spec.tests,
        limits=job.spec.limits,
    )
    kind = job.sandbox or "local"
    try:
        task_sandbox = deps.tasks.get(kind)
        if task_sandbox is not None:
            task_arn = _launch(deps, job, task_sandbox, request)
            deps.jobs.record_task(job.id, job.attempts, task_arn)
            return "launched"  # the task's stopped event ends it (services/fargate.py)
        sandbox = deps.sandboxes.get(kind)
        if sandbox is None:
            raise SandboxUnavailable(f"no '{kind}' sandbox is configured")
        result = _run_watched(deps, job, sandbox, request)
    except (SandboxRefused, ResultRejected) as exc:
        return _not_run(deps, job, exc)
    except DependencyThrottled as exc:
        log.warning("sandbox throttled", extra={"job_id": job.id, "error": str(exc)})
        return _ended(end_job(deps, job, Throttled(f"sandbox throttled: {exc}", renew=renew)), exc)
    except PlatformFault as exc:
        log.warning("platform fault", extra={"job_id": job.id, "error": str(exc)})
        return _ended(end_job(deps, job, Faulted(f"platform fault: {exc}")), exc)
    except UnknownRuntime as exc:
        # The sandbox cannot run what the API accepted (a runtime it lacks): retrying cannot help.
        log.error("sandbox refused the job", extra={"job_id": job.id, "error": str(exc)})
        return _ended(end_job(deps, job, GaveUp(f"the sandbox cannot run this job: {exc}")), exc)
    return _ended(end_job(deps, job, Finished(result)))


def _ended(ended: Ended | None, cause: Exception | None = None) -> str:
    """What the worker reports for an exit: the job's new status; RetryLater when its held message comes
    back after a delay (a retry or a throttle's back-off)."""
    if ended is not None and ended.retry_in_s is not None:
        raise RetryLater(ended.retry_in_s, str(cause or "retry")) from cause
    return ended.job.status.value if ended is not None else "discarded"


def _not_run(deps: Deps, job: Job, exc: SandboxRefused | ResultRejected) -> str:
    """A sandbox refused the job (a guarantee cannot hold there) or answered without a valid seal.

    A refusal of an `auto` job is retried: the next attempt's `pick` skips the refusing sandbox (Fargate takes
    a job Lambda refuses). A refusal of an explicitly chosen sandbox, or a rejected result, ends the job in
    `error` at once: re-running a program that may have forged its result gives it another try.
    """
    kind = job.sandbox or "local"
    if isinstance(exc, ResultRejected):
        deps.metric(SANDBOX_RESULT_REJECTED, 1, "Count", sandbox=kind)
        log.error("sandbox result rejected", extra={"job_id": job.id, "sandbox": kind, "error": str(exc)})
        exit_: Faulted | GaveUp = GaveUp(f"the {kind} sandbox's answer failed its integrity check: {exc}")
    elif job.spec.sandbox == "auto":
        log.warning("sandbox refused; another is picked", extra={"job_id": job.id, "error": str(exc)})
        exit_ = Faulted(str(exc))
    else:
        exit_ = GaveUp(str(exc))
    return _ended(end_job(deps, job, exit_), exc)


def _launch(deps: Deps, job: Job, sandbox: TaskSandbox, request: ExecutionRequest) -> str:
    try:
        return sandbox.launch(request)
    except PlatformFault:
        deps.metric(FARGATE_LAUNCH_FAILURES, 1, "Count", **{TIER_DIMENSION: job.tier})
        raise


def _run_watched(deps: Deps, job: Job, sandbox: SyncSandbox, request: ExecutionRequest) -> ExecutionResult:
    """Run with a watcher that sets `cancel` as soon as the job is cancelled (the local run is killed). The
    watcher re-reads the job when a change is announced, and otherwise only every poll interval. A sandbox
    that cannot be interrupted (Lambda) is not watched: a cancelled run's result is discarded instead."""
    if not sandbox.cancellable:
        return sandbox.run(request)
    cancel = threading.Event()
    stop = threading.Event()
    interval = CANCEL_SAFETY_POLL_S if deps.signals.notifies else CANCEL_POLL_S

    def watch(wait_changed: WaitChanged) -> None:
        while True:
            wait_changed(interval)
            if stop.is_set():
                return
            try:
                current = deps.jobs.get(job.id)
            except Exception:  # noqa: BLE001 - a failed read is retried on the next tick
                continue
            if current is None or current.status is not JobStatus.RUNNING or current.attempts != job.attempts:
                cancel.set()
                return

    with deps.signals.watch(job.id) as wait_changed:  # leaving it wakes the watcher
        watcher = threading.Thread(target=watch, args=(wait_changed,), name=f"watch-{job.id}", daemon=True)
        watcher.start()
        try:
            result = sandbox.run(request, cancel=cancel)
        finally:
            stop.set()
    watcher.join(timeout=2)
    return result


def _append_run_log(deps: Deps, job: Job) -> None:
    """The chaos test's side channel: one line per run, written outside the sandbox before it starts."""
    path = deps.settings.run_log
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{job.id} {job.attempts} {os.getpid()}\n")
