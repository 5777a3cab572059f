"""Submit a job: authenticate and charge the quota, reserve a place in the tier queue, store, enqueue.

Accepted path, in AWS requests: 1 UpdateItem (key: auth + minute/day quota), 1 UpdateItem (tier queue:
backpressure, sequence, position), 1 PutItem (job), 1 SendMessage. A refused submit gives back what it took.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from chalicelib.domain.errors import CodeRunnerError, Conflict, QuotaUsage, ValidationFailed
from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.domain.quotas import QuotaState, day_window, minute_window, refunded, usage
from chalicelib.domain.requests import BatchRequest, SubmitRequest
from chalicelib.domain.views import JobView
from chalicelib.services import catalog, payloads
from chalicelib.services.deps import Deps
from chalicelib.services.estimates import estimate_wait
from chalicelib.services.keys import authenticate, check_scope, hash_key
from chalicelib.services.lifecycle import log_transition
from chalicelib.services.specs import build_spec, field_errors, parse_submit
from chalicelib.services.webhooks import check_url

log = logging.getLogger(__name__)


@dataclass
class Accepted:
    job: Job
    position: int
    estimated_wait_s: float | None
    usage: QuotaUsage | None = None  # the key's quota after this submit (None for a replay: nothing charged)
    replayed: bool = False

    def view(self) -> JobView:
        return JobView.of(self.job, self.position, self.estimated_wait_s)


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def submit_job(deps: Deps, plain_key: str, body: Any, idempotency_key: str | None = None) -> Accepted:
    """Accept one job or raise the CodeRunnerError that says why not (nothing is consumed then)."""
    request = parse_submit(body)
    check_url(deps, request.callback_url)  # resolved and checked now, before anything is charged (SSRF)
    if idempotency_key:
        return _submit_idempotent(deps, plain_key, body, request, idempotency_key)
    return _submit(deps, plain_key, request, deps.new_id())


def _submit_idempotent(deps: Deps, plain_key: str, body: Any, request: SubmitRequest, idem: str) -> Accepted:
    scope = f"{hash_key(plain_key)}:{idem}"
    job_id = deps.new_id()
    claimed = deps.counters.claim_idempotency(scope, body_hash(body), job_id, deps.clock.now())
    if claimed is not None:
        stored_hash, stored_job = claimed
        if stored_hash != body_hash(body):
            raise Conflict("this Idempotency-Key was used with another body", {"idempotency_key": idem})
        job = deps.jobs.get(stored_job)
        if job is None:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly")
        return Accepted(job, _position(deps, job), None, replayed=True)
    try:
        return _submit(deps, plain_key, request, job_id)
    except Exception:
        _undo(deps.counters.drop_idempotency, scope)  # a refused request leaves nothing behind
        raise


def _submit(deps: Deps, plain_key: str, request: SubmitRequest, job_id: str) -> Accepted:
    now = deps.clock.now()
    key, quota = deps.keys.charge(hash_key(plain_key), now)
    policy = deps.settings.tier(key.tier)
    try:
        spec = build_spec(request, policy, deps.settings, catalog.offers(deps))
        check_scope(key, spec.runtime, spec.tool)  # 403: refused like any invalid job, so refunded below
        seq, ahead = deps.counters.reserve_queue_place(key.tier, policy.queue_cap)
    except CodeRunnerError as exc:
        _undo(deps.keys.refund, key.key_hash, minute_window(now), day_window(now))
        # The refused request consumed nothing: the client sees its quota as it stands after the refund.
        exc.usage = usage(_after_refund(quota, now), now, policy)
        deps.metric("JobsRejected", tier=key.tier, reason=exc.code)
        raise
    except Exception:
        _undo(deps.keys.refund, key.key_hash, minute_window(now), day_window(now))
        raise
    try:
        # A large input goes to the results bucket; the job's record keeps the rest of the spec and a reference.
        spec, spec_ref = payloads.stash_spec(deps, job_id, spec)
    except Exception:
        _undo(deps.counters.adjust_tier, key.tier, -1, 0)
        _undo(deps.keys.refund, key.key_hash, minute_window(now), day_window(now))
        raise
    job = Job(
        id=job_id,
        owner=key.owner,
        key_id=key.key_id,
        tier=key.tier,
        status=JobStatus.QUEUED,
        spec=spec,
        spec_ref=spec_ref,
        seq=seq,
        group=f"{key.key_id}.{key.total % policy.concurrency}",
        created_at=now,
        due_at=now + deps.settings.orphan_after_s,
        charged_day=day_window(now),
        charged_minute=minute_window(now),
        key_hash=key.key_hash,
    )
    try:
        deps.jobs.create(job)
    except Exception:
        _undo(deps.counters.adjust_tier, key.tier, -1, 0)
        _undo(deps.keys.refund, key.key_hash, job.charged_minute, job.charged_day)
        raise
    key_ahead = _track(deps, job)  # before the send: a worker may end the job as soon as it is sent
    try:
        deps.queue.send(job)
    except Exception:
        # The job is stored as queued: the reaper re-sends queued jobs that never started, and FIFO
        # deduplication on the job id drops the copy if this send did get through. So 202 is the truth.
        log.exception("send failed; the reaper will re-drive the job", extra={"job_id": job.id})
        deps.metric("SendFailed", tier=key.tier)
    deps.metric("JobsSubmitted", tier=key.tier)
    wait = estimate_wait(deps, key.tier, ahead, key.key_id, key_ahead)
    log_transition(job, position=ahead, estimated_wait_s=wait)
    return Accepted(job, ahead, wait, usage(quota, now, policy))


def _track(deps: Deps, job: Job) -> int:
    """Count the job among its key's jobs in flight; how many of them are ahead of it (0 if that failed: the
    estimate is then the tier's alone, and the job ends untracked, which only makes later estimates short)."""
    try:
        return len(deps.counters.track_active(job.key_id, job.id).active - {job.id})  # all came before it
    except Exception:  # noqa: BLE001 - an estimate never fails an accepted submit
        log.warning("could not track the job among its key's jobs", exc_info=True, extra={"job_id": job.id})
        return 0


def _undo(action: Any, *args: Any) -> None:
    """Give back something a failed submit took; a failure here is logged, never hides the first error."""
    try:
        action(*args)
    except Exception:  # noqa: BLE001 - the original error is the one the client must see
        log.exception("could not undo part of a failed submit", extra={"undo": getattr(action, "__name__", "")})


def _after_refund(state: QuotaState, now: float) -> QuotaState:
    return refunded(state, minute_window(now), day_window(now))


def _position(deps: Deps, job: Job) -> int:
    if job.status is not JobStatus.QUEUED:
        return 0
    return deps.jobs.count_queued_ahead(job.tier, job.seq)


def submit_batch(deps: Deps, plain_key: str, body: Any) -> list[Accepted | CodeRunnerError]:
    """Up to 20 jobs, each accepted or refused on its own, in order; a bad key refuses the whole batch."""
    try:
        batch = BatchRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed("invalid batch: give 'jobs', a list of 1 to 20 jobs", field_errors(exc)) from exc
    authenticate(deps, plain_key)
    outcomes: list[Accepted | CodeRunnerError] = []
    for item in batch.jobs:
        try:
            outcomes.append(submit_job(deps, plain_key, item))
        except CodeRunnerError as exc:
            outcomes.append(exc)
    return outcomes
