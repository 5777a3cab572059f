"""The worker's use case: take one queued job off its message and run it in a sandbox.

Duplicate deliveries are harmless because a job starts only through the conditional `queued -> running`
write (with the attempt number it expects): the second delivery finds the job running or done and is
acknowledged without running anything.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.errors import StaleState
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.sandbox.models import ExecutionRequest, SandboxUnavailable
from chalicelib.sandbox.selection import pick_sandbox
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import finish, retry_or_give_up, slot_holder
from chalicelib.services.ports import WaitChanged

log = logging.getLogger(__name__)

CANCEL_POLL_S = 0.5  # where nothing announces a cancel (AWS): how often a running job's watcher reads it
CANCEL_SAFETY_POLL_S = 5.0  # where a cancel is announced (local stack): a lost announcement delays it this much


class RetryLater(Exception):
    """Leave the message in the queue and try it again after `delay_s` (its message group waits)."""

    def __init__(self, delay_s: int, reason: str) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


def handle_message(deps: Deps, message: dict[str, Any]) -> str:
    """Process one queue message; returns what happened. Raises RetryLater to keep the message."""
    job = deps.jobs.get(str(message.get("job_id", "")))
    if job is None:
        log.warning("message for an unknown job dropped", extra={"job_id": message.get("job_id")})
        return "unknown"
    if job.status is not JobStatus.QUEUED:
        # terminal (cancelled while queued, or a duplicate), or running under another worker's lease
        return f"skipped:{job.status.value}"
    policy = deps.settings.tier(job.tier)
    next_attempt = job.model_copy(update={"attempts": job.attempts + 1})
    if not deps.counters.acquire_slot(job.key_id, slot_holder(next_attempt), policy.concurrency):
        raise RetryLater(deps.settings.slot_wait_s, "all of the key's running slots are taken")
    now = deps.clock.now()
    kind = pick_sandbox(job.spec.sandbox, job.spec.limits, deps.settings.sandbox_mode == "local")
    runs = max(1, len(job.spec.tests))
    try:
        job = deps.jobs.transition(
            job,
            JobStatus.RUNNING,
            {
                "started_at": now,
                "attempts": job.attempts + 1,
                "sandbox": kind,
                "error": None,
                "lease_until": now + job.spec.limits.wall_time_s * runs + deps.settings.lease_grace_s,
            },
            expected_attempts=job.attempts,
        )
    except StaleState:
        deps.counters.release_slot(job.key_id, slot_holder(next_attempt))
        return "lost-race"
    except Exception:
        # Throttled or unreachable: nothing started. Give the slot back now (the reaper would, later)
        # and let the message come back after its visibility timeout.
        try:
            deps.counters.release_slot(job.key_id, slot_holder(next_attempt))
        except Exception:  # noqa: BLE001 - the reaper releases slots of jobs that are not running
            log.warning("slot release failed", extra={"job_id": job.id})
        raise
    deps.signals.job_changed(job.id)
    deps.counters.job_started(job.tier)
    deps.metric("QueueWait", job.queue_wait_ms or 0, "Milliseconds", tier=job.tier)
    return run(deps, job, kind)


def run(deps: Deps, job: Job, kind: str) -> str:
    """Run a started job in sandbox `kind` and record the outcome; platform faults retry with backoff."""
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
    sandbox = deps.sandboxes.get(kind)
    try:
        if sandbox is None:
            raise SandboxUnavailable(f"no '{kind}' sandbox is configured")
        if kind == "fargate":
            task_arn = sandbox.launch(request)  # type: ignore[attr-defined]
            deps.jobs.set_fields(job.id, {"task_arn": task_arn}, JobStatus.RUNNING)
            return "launched"  # the ECS task-state-change event finishes it
        result = _run_watched(deps, job, sandbox, request)
    except (SandboxUnavailable, ClientError, BotoCoreError) as exc:
        log.warning("platform fault", extra={"job_id": job.id, "error": str(exc)})
        delay = retry_or_give_up(deps, job, f"platform fault: {exc}")
        if delay is None:
            return "dead-lettered"
        raise RetryLater(delay, str(exc)) from exc
    done = finish(deps, job, result)
    return done.status.value if done else "discarded"


def _run_watched(deps: Deps, job: Job, sandbox: Any, request: ExecutionRequest) -> Any:
    """Run with a watcher that sets `cancel` as soon as the job is cancelled (the local run is killed). The
    watcher re-reads the job when a change is announced, and otherwise only every poll interval."""
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
