"""Read-side use cases: one job (with long-poll), the caller's jobs, usage, queue state."""

from __future__ import annotations

import time
from collections.abc import Iterator

from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.domain.quotas import QuotaState, day_reset, minute_reset
from chalicelib.domain.views import (
    ConcurrencyView,
    JobsPage,
    JobView,
    QueueView,
    ResultView,
    TierQueueView,
    UsageView,
    UsageWindow,
)
from chalicelib.services import payloads
from chalicelib.services.deps import Deps
from chalicelib.services.estimates import estimate_wait
from chalicelib.services.lifecycle import owned_job
from chalicelib.services.ports import ApiKey

MAX_WAIT_S = 20.0
# Where nothing announces a job's changes (AWS), a long-poll reads the job again after FIRST_POLL_S (no job
# ends sooner: it is picked up, started, run and ended), then every POLL_S while most jobs end, then less and
# less often. Each read costs the API function CPU and half a read unit; each moment a finished job waits for
# the next read costs the function's memory.
FIRST_POLL_S = 0.25
POLL_S = 0.1
FAST_POLLS_FOR_S = 2.0
SAFETY_POLL_S = 5.0  # where changes are announced (local stack): re-read at least this often all the same


def job_view(deps: Deps, job: Job) -> JobView:
    """The job with its live position and estimated wait while queued, and its whole result once it ended."""
    if job.status is JobStatus.QUEUED:
        ahead = deps.jobs.count_queued_ahead(job.tier, job.seq)
        key_ahead = deps.counters.key_load(job.key_id).ahead_of(job.id)
        return JobView.of(job, ahead, estimate_wait(deps, job.tier, ahead, job.key_id, key_ahead))
    running = job.status is JobStatus.RUNNING
    return JobView.of(job, 0 if running else None, 0.0 if running else None, result_view(deps, job))


def result_view(deps: Deps, job: Job) -> ResultView | None:
    """The whole result (read back from the bucket when stored apart) if an answer can hold it, else the
    record's preview with a URL to the whole (services/payloads.py)."""
    if job.result is None:
        return None
    encoding = job.spec.output_encoding
    if job.result_ref is not None:
        whole = payloads.whole_result(deps, job)
        if whole is not None:
            view = ResultView.of(whole, encoding, job.spec.tests)
            if payloads.answer_size(view.model_dump(mode="json")) <= payloads.RESPONSE_RESULT_BYTES:
                return view
    return ResultView.of(job.result, encoding, job.spec.tests, payloads.full_result_url(deps, job))


def poll_delays() -> Iterator[float]:
    """The pauses between a long-poll's reads (FIRST_POLL_S, POLL_S for FAST_POLLS_FOR_S, then x1.5 up to 1 s)."""
    yield FIRST_POLL_S
    waited, delay = FIRST_POLL_S, POLL_S
    while True:
        yield delay
        waited += delay
        if waited >= FAST_POLLS_FOR_S:
            delay = min(delay * 1.5, 1.0)


def get_job(deps: Deps, key: ApiKey, job_id: str, wait_s: float = 0.0) -> JobView:
    """The job; with `wait_s`, wait until it is terminal or the wait runs out (long-poll). Where job changes
    are announced (the local stack) the job is re-read when it changed; elsewhere it is polled with a backoff."""
    if wait_s <= 0:
        return job_view(deps, owned_job(deps, key, job_id))
    deadline = time.monotonic() + wait_s
    delays = poll_delays()
    with deps.signals.watch(job_id) as wait_changed:  # before the first read: no change slips in between
        job = owned_job(deps, key, job_id)
        while not job.status.terminal and (left := deadline - time.monotonic()) > 0:
            wait_changed(min(left, SAFETY_POLL_S if deps.signals.notifies else next(delays)))
            job = owned_job(deps, key, job_id, consistent=False)
    return job_view(deps, job)


def list_jobs(deps: Deps, key: ApiKey, limit: int, cursor: str | None, status: JobStatus | None = None) -> JobsPage:
    """The owner's jobs, newest first; with `status`, only jobs in that status (`limit`, the cursor and the
    status are checked by the edge: chalicelib/edge/params.py)."""
    try:
        page = deps.jobs.list_by_owner(key.owner, limit, cursor, status)
    except ValueError as exc:
        raise ValidationFailed(
            "invalid cursor", [{"field": "cursor", "in": "query", "message": "not a cursor we issued"}]
        ) from exc
    # A list shows what each record keeps: a large result's preview, with the URL to the whole.
    views = [JobView.of(j, result=_kept_result(deps, j)) for j in page.items]
    return JobsPage(jobs=views, next_cursor=page.cursor)


def _kept_result(deps: Deps, job: Job) -> ResultView | None:
    if job.result is None:
        return None
    return ResultView.of(job.result, job.spec.output_encoding, job.spec.tests, payloads.full_result_url(deps, job))


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
        scopes=list(key.scopes),
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
