"""Scheduled cleanup: reap jobs running past their deadline, re-drive queued jobs whose message was never
sent, release leaked slots, reconcile the tier counters. Every action is logged and counted."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from chalicelib.domain.errors import StaleState
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.services.deps import Deps
from chalicelib.services.lifecycle import _stop_task, mark_error, refund, slot_holder

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 300  # SQS FIFO drops a message whose deduplication id it saw in the last 5 minutes
REDRIVE_EVERY_S = 90  # a queued job that has not started is re-sent at most this often


def reap(deps: Deps) -> dict[str, int]:
    """One cleanup pass; returns how many of each action it took."""
    actions: Counter[str] = Counter()
    now = deps.clock.now()
    for job in deps.jobs.due(JobStatus.RUNNING, now):
        actions[_reap_running(deps, job)] += 1
    for job in deps.jobs.due(JobStatus.QUEUED, now):
        actions[_redrive_queued(deps, job, now)] += 1
    actions["slots_released"] += release_leaked_slots(deps)
    actions["counters_reconciled"] += reconcile_counters(deps)
    actions.pop("none", None)
    for name, count in actions.items():
        if count:
            log.info("reaper action", extra={"action": name, "count": count})
            deps.metric("ReaperActions", count, action=name)
    return {name: count for name, count in actions.items() if count}


def _reap_running(deps: Deps, job: Job) -> str:
    """A job past its lease: its worker died or hung. Retry it while attempts remain, else give up."""
    _stop_task(deps, job, "past its deadline")
    if job.attempts < deps.settings.max_attempts:
        try:
            deps.jobs.transition(
                job,
                JobStatus.QUEUED,
                {"lease_until": None, "error": "worker lost; retrying"},
                expected_attempts=job.attempts,
            )
        except StaleState:
            return "none"
        deps.counters.job_requeued(job.tier)
        deps.counters.release_slot(job.key_id, slot_holder(job))
        deps.queue.send(job, dedup_id=f"{job.id}#retry{job.attempts}")
        return "running_retried"
    return "running_errored" if _give_up(deps, job) else "none"


def _give_up(deps: Deps, job: Job) -> bool:
    try:
        done = deps.jobs.transition(
            job,
            JobStatus.ERROR,
            {"finished_at": deps.clock.now(), "lease_until": None, "error": "worker lost on every attempt"},
            expected_attempts=job.attempts,
        )
    except StaleState:
        return False
    deps.signals.job_changed(job.id)
    deps.counters.job_finished(job.tier)
    deps.counters.release_slot(job.key_id, slot_holder(job))
    refund(deps, done)
    return True


def _redrive_queued(deps: Deps, job: Job, now: float) -> str:
    """A queued job that has not started: send its message again. Within SQS's 5-minute deduplication
    window the same deduplication id makes this a no-op if the first send did get through; later, a
    duplicate message is harmless (the job starts once) but costs, so each job is re-driven late only once."""
    if now - job.created_at < DEDUP_WINDOW_S - 30:
        deps.queue.send(job)
        deps.jobs.set_fields(job.id, {"due_at": now + REDRIVE_EVERY_S}, JobStatus.QUEUED)
        return "queued_redriven"
    if deps.jobs.set_fields(job.id, {"redriven_late": True, "due_at": None}, JobStatus.QUEUED):
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
    """A message on a tier's DLQ: the platform gave up on this job."""
    reason = str(message.get("reason") or "the job's message was dead-lettered after repeated failures")
    done = mark_error(deps, str(message.get("job_id", "")), reason)
    return "errored" if done else "skipped"
