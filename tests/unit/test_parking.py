"""Waiting for an owner's slot: parked (its message deleted), woken oldest first by whoever frees a slot, with no
lost wake-up and no double wake, and the reaper as the safety net (services/parking.py)."""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services import lifecycle, parking
from chalicelib.services.keys import authenticate
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message
from tests.fakes import FakeSandbox

JOB = {"runtime": "python", "source": "print(1)"}


def submit(deps: Any, key: str) -> str:
    return submit_job(deps, key, JOB).job.id


def deliver(deps: Any, job_id: str) -> str:
    return handle_message(deps, {"job_id": job_id, "tier": "free"})


def fill_slots(deps: Any, owner: str) -> None:
    """Two running jobs of the owner (a free key runs 2 at once), "running-a" and "running-b", hold its slots
    (running for a long while: the reaper leaves them alone)."""
    for name in ("running-a", "running-b"):
        job = next(j for j in deps.jobs.jobs.values() if j.key_id == owner).model_copy(
            update={"id": name, "status": JobStatus.RUNNING, "attempts": 1, "due_at": deps.clock.now() + 10**6}
        )
        deps.jobs.jobs[name] = job
        deps.counters.acquire_slot(owner, f"{name}#1", 2)


def woken(deps: Any) -> list[str]:
    """Jobs a wake-up sent a fresh message for, in order."""
    return [job_id for _, job_id, _, dedup in deps.queue.sent if "#wake" in dedup]


def test_a_freed_slot_wakes_the_owners_oldest_parked_job(deps: Any, key: str) -> None:
    ids = [submit(deps, key) for _ in range(3)]
    owner = deps.jobs.get(ids[0]).key_id
    fill_slots(deps, owner)
    for job_id in (ids[2], ids[0], ids[1]):  # delivered out of order: the wake order is by submission
        assert deliver(deps, job_id) == "parked"
    assert deps.counters.all_slots()[owner].parked == 3
    parking.release(deps, owner, "running-a#1")
    assert woken(deps) == [ids[0]]
    assert not deps.jobs.get(ids[0]).parked and deps.jobs.get(ids[1]).parked
    assert deps.counters.all_slots()[owner].parked == 2
    assert deliver(deps, ids[0]) == "succeeded"  # its fresh message: it takes the freed slot and runs
    assert woken(deps) == [ids[0], ids[1]]  # and its own end freed the slot again: the next one is woken


def test_a_job_ending_wakes_the_next_parked_job_of_its_owner(deps: Any, key: str) -> None:
    first, *others = [submit(deps, key) for _ in range(3)]
    owner = deps.jobs.get(first).key_id
    deps.counters.acquire_slot(owner, "running-a#1", 2)  # the other slot is taken
    parked = []

    class OthersArriveWhileItRuns(FakeSandbox):
        def run(self, request: Any, cancel: Any = None) -> ExecutionResult:
            parked.extend(deliver(deps, job_id) for job_id in others)
            return super().run(request, cancel)

    deps.sandboxes["local"] = OthersArriveWhileItRuns()
    assert deliver(deps, first) == "succeeded"  # its end (lifecycle.end_job) frees its slot
    assert parked == ["parked", "parked"]
    assert woken(deps) == [others[0]]


def test_a_park_that_races_a_release_wakes_itself(deps: Any, key: str) -> None:
    """The lost wake-up: the slot is freed after the worker found none but before its park was counted, so
    the release saw nobody parked. The park's count, in the slots' own item, sees the free slot."""
    job_id = submit(deps, key)
    owner = deps.jobs.get(job_id).key_id
    fill_slots(deps, owner)
    take = deps.counters.acquire_slot

    def take_then_a_slot_is_freed(owner: str, holder: str, cap: int) -> Any:
        taken = take(owner, holder, cap)
        parking.release(deps, owner, "running-a#1")  # nobody is parked yet: it wakes nobody
        return taken

    deps.counters.acquire_slot = take_then_a_slot_is_freed
    assert deliver(deps, job_id) == "parked"
    assert woken(deps) == [job_id] and not deps.jobs.get(job_id).parked
    assert deps.counters.all_slots()[owner].parked == 0


def test_two_wakers_send_one_message(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    owner = deps.jobs.get(job_id).key_id
    fill_slots(deps, owner)
    assert deliver(deps, job_id) == "parked"
    start = threading.Barrier(2)

    def free(holder: str) -> None:
        start.wait()
        parking.release(deps, owner, holder)

    threads = [threading.Thread(target=free, args=(h,)) for h in ("running-a#1", "running-b#1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert woken(deps) == [job_id]
    assert deps.jobs.unpark(job_id, 0.0) is None  # the conditional un-park: it is not parked any more


def test_a_job_given_a_slot_yields_it_to_an_older_parked_job(deps: Any, key: str) -> None:
    older, younger = submit(deps, key), submit(deps, key)
    owner = deps.jobs.get(older).key_id
    fill_slots(deps, owner)
    assert deliver(deps, older) == "parked"
    deps.counters.release_slot(owner, "running-a#1")  # a slot freed, and the wake-up lost (a crash)
    assert deliver(deps, younger) == "yielded"
    assert deps.jobs.get(younger).parked and woken(deps) == [older]
    assert deliver(deps, older) == "succeeded"
    assert deps.sandboxes["local"].calls[0].job_id == older


def test_cancelling_a_parked_job_uncounts_it(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    owner = deps.jobs.get(job_id).key_id
    fill_slots(deps, owner)
    assert deliver(deps, job_id) == "parked"
    lifecycle.cancel(deps, authenticate(deps, key), job_id)
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.CANCELLED and not job.parked
    assert deps.counters.all_slots()[owner].parked == 0
    parking.release(deps, owner, "running-a#1")
    assert woken(deps) == []


def test_the_reaper_wakes_a_parked_job_whose_owner_has_a_free_slot(deps: Any, key: str) -> None:
    ids = [submit(deps, key) for _ in range(2)]
    owner = deps.jobs.get(ids[0]).key_id
    fill_slots(deps, owner)
    assert [deliver(deps, i) for i in ids] == ["parked", "parked"]
    deps.counters.release_slot(owner, "running-a#1")  # freed without a wake-up (a worker died after it)
    assert reap(deps).get("parked_woken") == 1  # one free slot: the oldest
    assert woken(deps) == [ids[0]] and deps.jobs.get(ids[1]).parked
    assert deliver(deps, ids[0]) == "succeeded"  # it runs in the free slot; its end wakes the next
    assert woken(deps) == [ids[0], ids[1]]


def test_the_reaper_zeroes_a_parked_count_that_counts_nobody(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    owner = deps.jobs.get(job_id).key_id
    deps.counters.count_parked(owner, +3)  # a drift: wakes that would find nobody
    reap(deps)
    assert deps.counters.all_slots()[owner].parked == 0


def test_a_parked_job_is_not_taken_for_an_orphan(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    owner = deps.jobs.get(job_id).key_id
    fill_slots(deps, owner)
    assert deliver(deps, job_id) == "parked"
    deps.clock.advance(3600)
    sent = len(deps.queue.sent)
    reap(deps)
    assert len(deps.queue.sent) == sent  # no re-drive: it waits for a slot, not for a lost message
