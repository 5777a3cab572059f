"""A job waiting for one of its owner's running slots is parked, not handed back to the queue.

Handing the message back every second (ChangeMessageVisibility) spent one SQS receive per second of waiting, so
the queues' maxReceiveCount had to outlast the longest legal wait and SQS's DLQ could never catch a poison
message. Instead, a worker that finds every slot of the owner taken parks the job (a mark on the queued job, in
the sparse `parked_jobs` index keyed by owner and ordered by submission) and deletes its message; whoever frees
one of the owner's slots wakes the owner's oldest parked job: takes the mark off with a conditional write (of
two wakers, one wins) and sends the job a fresh message.

No lost wake-up: the owner's parked count lives in the same item as the slots, so a park (`count_parked(+1)`,
which answers with the slots as they are after it) and a release (which answers with the count) are ordered by
that item. A park that finds a slot free by then wakes the oldest parked job itself; a release that finds the
count above zero wakes one. The index may lag the mark it is asked about by a moment: the waker asks again
briefly, the parker falls back on its own job, and the reaper re-sends any parked job whose owner has a free
slot (`wake_parked`).

Order: the oldest parked job is woken first, and a job that gets a slot while older jobs of its owner are
parked gives the slot up to the oldest (a woken job's fresh message may reach a worker after a younger job's).
"""

from __future__ import annotations

import logging
import time

from chalicelib.domain.jobs import Job
from chalicelib.services.deps import Deps
from chalicelib.services.ports import Slots

log = logging.getLogger(__name__)

INDEX_LAG_TRIES = 3  # the parked index is eventually consistent: ask again this often when the count says so
INDEX_LAG_BASE_S = 0.05


def park(deps: Deps, job: Job, cap: int) -> str:
    """Park a queued job whose owner has all `cap` slots taken (its message is then deleted)."""
    parked = deps.jobs.park(job)
    if parked is None:
        return "lost-race"  # started by another delivery, cancelled, or parked already
    slots = deps.counters.count_parked(job.key_id, +1)
    deps.metric("JobsParked", tier=job.tier)
    if len(slots.holders) < cap:
        # A slot came free between the failed take and the park: nobody would wake us; wake the oldest.
        wake_oldest(deps, job.key_id, slots, fallback=parked.id)
    return "parked"


def release(
    deps: Deps, key_id: str, holder: str, ended: str | None = None, run: tuple[int, float] | None = None
) -> Slots:
    """Give a slot back and wake the owner's oldest parked job if any waits (the one way slots are freed).
    `ended`: the holder's job is terminal and leaves the owner's jobs in flight; `run`: the run joins the key's
    statistics; both in the same write (Counters.release_slot)."""
    slots = deps.counters.release_slot(key_id, holder, ended, run)
    if slots.parked > 0:
        wake_oldest(deps, key_id, slots)
    return slots


def wake_oldest(deps: Deps, key_id: str, slots: Slots, fallback: str | None = None) -> Job | None:
    """Un-park the owner's oldest parked job and send it a fresh message; the job woken, or None."""
    for attempt in range(INDEX_LAG_TRIES):
        candidates = [job_id for _, job_id in deps.jobs.parked_of(key_id, 3)]
        if fallback is not None and not candidates:
            candidates = [fallback]
        for job_id in candidates:
            job = deps.jobs.unpark(job_id, deps.clock.now() + deps.settings.orphan_after_s)
            if job is not None:
                deps.counters.count_parked(key_id, -1)
                deps.queue.send(job, wake_dedup_id(job))
                log.info("parked job woken", extra={"job_id": job.id, "key_id": key_id})
                return job
        if candidates or slots.parked <= 0:
            return None  # another waker took them, or nothing waits
        time.sleep(INDEX_LAG_BASE_S * 2**attempt)
    log.warning("a parked job was not found; the reaper wakes it", extra={"key_id": key_id})
    return None


def wake_dedup_id(job: Job) -> str:
    """Each wake sends a message of its own (FIFO drops a deduplication id it saw in the last 5 minutes)."""
    return f"{job.id}#wake{job.parks}"


def yields_to_parked(deps: Deps, job: Job, slots: Slots) -> bool:
    """True when `job`, having just taken a slot, should give it up to an older parked job of its owner."""
    if slots.parked <= 0:
        return False
    older = deps.jobs.parked_of(job.key_id, 1)
    return bool(older) and older[0][0] < job.seq


def wake_parked(deps: Deps) -> int:
    """The reaper's safety net: wake parked jobs whose owner has a free slot; zero a parked count that counts
    nobody. Returns how many jobs were woken."""
    woken = 0
    every = deps.counters.all_slots()
    parked_keys = deps.jobs.parked_keys()
    for key_id in parked_keys:
        oldest = deps.jobs.parked_of(key_id, 1)
        job = deps.jobs.get(oldest[0][1]) if oldest else None
        if job is None:
            continue
        slots = every.get(key_id, Slots())
        free = deps.settings.tier(job.tier).concurrency - len(slots.holders)
        for _ in range(max(0, free)):
            if wake_oldest(deps, key_id, Slots(slots.holders, max(1, slots.parked))) is None:
                break
            woken += 1
    for key_id, slots in every.items():
        if slots.parked > 0 and key_id not in parked_keys:
            deps.counters.reset_parked(key_id, slots.parked)
    return woken
