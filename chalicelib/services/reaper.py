"""Scheduled cleanup: the one safety net for what a crash between a job's writes can leave behind.

Each pass repairs, and each repair has its own test (tests/unit/test_reaper.py):
- a running job past its lease (its worker died or hung): ended as `Lost` (retried or errored, its task
  stopped) through the one lifecycle exit;
- a queued job whose message never went, or went with a worker that died: sent again;
- a slot held by a job that is not running it any more: released;
- a job counted among its key's jobs in flight after it ended: forgotten;
- tier counters that drifted from the job records: corrected (on a repeated sighting only);
- a terminal job whose job.finished event was never produced: produced now (services/delivery.py);
- WebSocket connections that went away without saying so: removed.
Every action is logged and counted (`ReaperActions`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from chalicelib.domain.errors import NotFound
from chalicelib.domain.exits import GaveUp, Lost
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.services.channel import sweep
from chalicelib.services.delivery import republish
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import end_current, end_job

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 300  # SQS FIFO drops a message whose deduplication id it saw in the last 5 minutes
REDRIVE_EVERY_S = 90  # a queued job that has not started is re-sent at most this often
STALE_ACTIVE_S = 300  # a key's job in flight is checked once it is this old
STALE_ACTIVE_READS = 200  # job reads per pass for that check


def reap(deps: Deps) -> dict[str, int]:
    """One cleanup pass; returns how many of each action it took."""
    actions: Counter[str] = Counter()
    now = deps.clock.now()
    for job in deps.jobs.due(JobStatus.RUNNING, now):
        actions[_reap_running(deps, job)] += 1
    for job in deps.jobs.due(JobStatus.QUEUED, now):
        actions[_redrive_queued(deps, job, now)] += 1
    actions["slots_released"] += release_leaked_slots(deps)
    actions["active_forgotten"] += forget_stale_active(deps, now)
    actions["counters_reconciled"] += reconcile_counters(deps)
    actions["events_republished"] += republish(deps)
    actions["connections_swept"] += sweep(deps)
    actions.pop("none", None)
    for name, count in actions.items():
        if count:
            log.info("reaper action", extra={"action": name, "count": count})
            deps.metric("ReaperActions", count, action=name)
    return {name: count for name, count in actions.items() if count}


def _reap_running(deps: Deps, job: Job) -> str:
    """A job past its lease: retried while attempts remain, else errored (and its task stopped)."""
    ended = end_job(deps, job, Lost())
    if ended is None:
        return "none"
    return "running_retried" if ended.job.status is JobStatus.QUEUED else "running_errored"


def _redrive_queued(deps: Deps, job: Job, now: float) -> str:
    """A queued job that has not started: send its message again. Within SQS's 5-minute deduplication
    window the same deduplication id makes this a no-op if the first send did get through; later, a
    duplicate message is harmless (the job starts once) but costs, so each job is re-driven late only once."""
    if now - job.created_at < DEDUP_WINDOW_S - 30:
        deps.queue.send(job)
        deps.jobs.set_due(job.id, JobStatus.QUEUED, now + REDRIVE_EVERY_S)
        return "queued_redriven"
    if deps.jobs.mark_redriven_late(job.id):
        deps.queue.send(job, dedup_id=f"{job.id}#late")
        return "queued_redriven_late"
    return "none"


def release_leaked_slots(deps: Deps) -> int:
    """Free slots whose holder is not running any more (its job finished, vanished or was retried)."""
    released = 0
    for key_id, holders in deps.counters.slot_holders().items():
        for holder in holders:
            job_id, _, attempt = holder.partition("#")
            job = deps.jobs.get(job_id)
            if job is None or job.status is not JobStatus.RUNNING or str(job.attempts) != attempt:
                if job is not None and job.status is JobStatus.QUEUED and str(job.attempts + 1) == attempt:
                    continue  # taken a moment ago by a worker that is starting this job
                deps.counters.release_slot(key_id, holder)
                released += 1
    return released


def forget_stale_active(deps: Deps, now: float) -> int:
    """Forget jobs still counted in flight for their key after they ended (a crash between a job's terminal
    write and its `forget_active`): they would lengthen the key's wait estimates. Only ids older than
    `STALE_ACTIVE_S` are read, at most `STALE_ACTIVE_READS` per pass (ids are time-ordered: ms in hex)."""
    forgotten, reads = 0, 0
    for key_id, job_ids in deps.counters.active_by_owner().items():
        for job_id in sorted(job_ids):
            if reads >= STALE_ACTIVE_READS or _id_time(job_id) > now - STALE_ACTIVE_S:
                break
            reads += 1
            job = deps.jobs.get(job_id)
            if job is None or job.status.terminal:
                deps.counters.forget_active(key_id, job_id)
                forgotten += 1
    return forgotten


def _id_time(job_id: str) -> float:
    try:
        return int(job_id[:12], 16) / 1000.0
    except ValueError:
        return 0.0  # not one of our ids: old enough to look at


def reconcile_counters(deps: Deps) -> int:
    """Bring each tier's queued/running counters back to the job records when they drifted (a worker died
    between a job's write and its counter's). A drift is corrected only when two passes in a row saw the
    same one, so a just-submitted job missing from an index yet is never taken for a leak."""
    corrected = 0
    for tier in deps.settings.tiers:
        counted = (deps.jobs.count_active(JobStatus.QUEUED, tier), deps.jobs.count_active(JobStatus.RUNNING, tier))
        if deps.counters.correct_tier_counts(tier, counted):
            log.warning("tier counters corrected", extra={"tier": tier, "counted": counted})
            corrected += 1
    return corrected


def dead_letter(deps: Deps, message: dict[str, Any]) -> str:
    """A message on a tier's DLQ: the platform gave up on this job. The hook: it ends `error` (refunded) if it
    has not ended already (a worker that exhausted its attempts ended it before sending the message)."""
    reason = str(message.get("reason") or "the job's message was dead-lettered after repeated failures")
    job_id = str(message.get("job_id", ""))
    log.error("job dead-lettered", extra={"job_id": job_id, "reason": reason})
    deps.metric("DeadLettered", tier=str(message.get("tier", "")))
    try:
        ended = end_current(deps, job_id, GaveUp(reason))
    except NotFound:
        return "skipped"
    return "errored" if ended else "skipped"
