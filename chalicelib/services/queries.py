"""Read-side use cases: one job (with long-poll), the caller's jobs, usage, queue state."""

from __future__ import annotations

import time

from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.domain.quotas import QuotaState, day_reset, minute_reset
from chalicelib.domain.views import (
    ConcurrencyView,
    JobsPage,
    JobView,
    QueueView,
    TierQueueView,
    UsageView,
    UsageWindow,
)
from chalicelib.services.deps import Deps
from chalicelib.services.estimates import estimate_wait
from chalicelib.services.lifecycle import owned_job
from chalicelib.services.ports import ApiKey

MAX_WAIT_S = 20.0
_POLL_S = 0.1
SAFETY_POLL_S = 5.0  # where changes are announced (local stack): re-read at least this often all the same


def parse_wait(raw: str | None) -> float:
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError as exc:
        raise ValidationFailed("wait must be a number of seconds", [{"field": "wait", "message": raw}]) from exc
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValidationFailed(f"wait must be between 0 and {MAX_WAIT_S:g}", [{"field": "wait", "message": raw}])
    return wait


def job_view(deps: Deps, job: Job) -> JobView:
    """The job with its live position and estimated wait while queued."""
    if job.status is JobStatus.QUEUED:
        ahead = deps.jobs.count_queued_ahead(job.tier, job.seq)
        key_ahead = deps.counters.key_load(job.key_id).ahead_of(job.id)
        return JobView.of(job, ahead, estimate_wait(deps, job.tier, ahead, job.key_id, key_ahead))
    running = job.status is JobStatus.RUNNING
    return JobView.of(job, 0 if running else None, 0.0 if running else None)


def get_job(deps: Deps, key: ApiKey, job_id: str, wait_s: float = 0.0) -> JobView:
    """The job; with `wait_s`, wait until it is terminal or the wait runs out (long-poll). Where job changes
    are announced (the local stack) the job is re-read when it changed; elsewhere it is polled with a backoff."""
    if wait_s <= 0:
        return job_view(deps, owned_job(deps, key, job_id))
    deadline = time.monotonic() + wait_s
    poll = _POLL_S
    with deps.signals.watch(job_id) as wait_changed:  # before the first read: no change slips in between
        job = owned_job(deps, key, job_id)
        while not job.status.terminal and (left := deadline - time.monotonic()) > 0:
            wait_changed(min(left, SAFETY_POLL_S if deps.signals.notifies else poll))
            poll = min(poll * 1.5, 1.0)  # fast at first (most jobs end in well under a second), then back off
            job = owned_job(deps, key, job_id)
    return job_view(deps, job)


def parse_status(raw: str | None) -> JobStatus | None:
    """`?status=` of the job listing: one of the job statuses, or absent."""
    if raw is None or raw == "":
        return None
    try:
        return JobStatus(raw)
    except ValueError as exc:
        allowed = ", ".join(s.value for s in JobStatus)
        raise ValidationFailed(
            f"status must be one of {allowed}", [{"field": "status", "message": f"unknown status {raw!r}"}]
        ) from exc


def list_jobs(
    deps: Deps, key: ApiKey, limit_raw: str | None, cursor: str | None, status_raw: str | None = None
) -> JobsPage:
    """The caller's jobs, newest first; with `status_raw`, only jobs in that status."""
    try:
        limit = int(limit_raw or 20)
    except ValueError as exc:
        raise ValidationFailed("limit must be an integer", [{"field": "limit", "message": limit_raw}]) from exc
    if not 1 <= limit <= 100:
        raise ValidationFailed("limit must be between 1 and 100", [{"field": "limit", "message": limit_raw}])
    status = parse_status(status_raw)
    try:
        page = deps.jobs.list_by_owner(key.owner, limit, cursor, status)
    except ValueError as exc:
        raise ValidationFailed("invalid cursor", [{"field": "cursor", "message": "not a cursor we issued"}]) from exc
    return JobsPage(jobs=[JobView.of(j) for j in page.items], next_cursor=page.cursor)


def usage(deps: Deps, key: ApiKey) -> UsageView:
    """Each limit, what is used, what remains and when its window resets (agrees with the headers)."""
    now = deps.clock.now()
    policy = deps.settings.tier(key.tier)
    cur: QuotaState = key.quota.current(now)
    holders = deps.counters.holders_of(key.key_id)
    return UsageView(
        key_id=key.key_id,
        owner=key.owner,
        tier=key.tier,
        per_minute=UsageWindow(
            limit=policy.per_minute,
            used=cur.m_n,
            remaining=max(0, policy.per_minute - cur.m_n),
            reset=minute_reset(now),
        ),
        per_day=UsageWindow(
            limit=policy.per_day, used=cur.d_n, remaining=max(0, policy.per_day - cur.d_n), reset=day_reset(now)
        ),
        concurrency=ConcurrencyView(limit=policy.concurrency, running=len(holders)),
        max_wall_time_s=policy.max_wall_time_s,
        max_memory_mb=policy.max_memory_mb,
    )


def queue_status(deps: Deps) -> QueueView:
    """Per-tier depth, running jobs and estimated wait for a new job."""
    tiers = {}
    for name in deps.settings.tiers:
        queued, running = deps.counters.tier_counts(name)
        tiers[name] = TierQueueView(
            queued=queued,
            running=running,
            capacity=deps.settings.capacity(name),
            queue_cap=deps.settings.tier(name).queue_cap,
            estimated_wait_s=estimate_wait(deps, name, queued),
        )
    return QueueView(tiers=tiers)
