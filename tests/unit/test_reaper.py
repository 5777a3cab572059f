"""The reaper: the one safety net for what a crash between a job's writes leaves behind, one test per repair."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.exits import Lost
from chalicelib.domain.jobs import JobStatus
from chalicelib.services.lifecycle import end_job
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message

JOB = {"runtime": "python", "source": "print(1)"}


def submit(deps: Any, key: str, body: dict | None = None) -> str:
    return submit_job(deps, key, body or JOB).job.id


def deliver(deps: Any, job_id: str) -> str:
    return handle_message(deps, {"job_id": job_id, "tier": "free"})


def used_today(deps: Any) -> int:
    return next(iter(deps.keys.keys.values())).quota.d_n


def start_and_die(deps: Any, job_id: str, attempt: int) -> None:
    """A worker starts the job and dies: nothing ends the run."""
    job = deps.jobs.get(job_id)
    now = deps.clock.now()
    started = deps.jobs.transition(
        job,
        JobStatus.RUNNING,
        {"attempts": attempt, "started_at": now, "lease_until": now + 10, "due_at": now + 10},
        expected_attempts=attempt - 1,
    )
    deps.counters.adjust_tier("free", queued=-1, running=1)
    deps.counters.acquire_slot(started.key_id, f"{job_id}#{attempt}", 2)


def test_reaper_retries_a_job_whose_worker_died_then_gives_up(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    deps.queue.sent.clear()
    for attempt in range(1, 4):
        start_and_die(deps, job_id, attempt)
        deps.clock.advance(11)
        actions = reap(deps)
        if attempt < 3:
            assert actions["running_retried"] == 1
            assert deps.jobs.get(job_id).status is JobStatus.QUEUED
            assert deps.queue.sent[-1][3] == f"{job_id}#retry{attempt}"
        else:
            assert actions["running_errored"] == 1
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.ERROR and used_today(deps) == 0
    assert deps.counters.slot_holders()[job.key_id] == set()
    assert deps.counters.tier_counts("free") == (0, 0)


def test_reaper_releases_leaked_slots(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    deliver(deps, job_id)
    owner = deps.jobs.get(job_id).key_id
    deps.counters.acquire_slot(owner, f"{job_id}#1", 2)  # a release that never happened
    deps.counters.acquire_slot(owner, "vanished#1", 2)
    assert reap(deps)["slots_released"] == 2
    assert deps.counters.slot_holders()[owner] == set()


def test_reaper_redrives_late_orphans_once(deps: Any, key: str) -> None:
    deps.queue.fail_sends = 1
    job_id = submit(deps, key)
    deps.clock.advance(400)  # past SQS's deduplication window
    assert reap(deps).get("queued_redriven_late") == 1
    assert deps.queue.sent[-1][3] == f"{job_id}#late"
    deps.clock.advance(400)
    assert "queued_redriven_late" not in reap(deps)


def test_reaper_corrects_drifted_tier_counters_on_the_second_sighting(deps: Any, key: str) -> None:
    submit(deps, key)  # one job really queued
    deps.counters.set_tier_counts("free", 3, 1)  # a worker died between writes, twice
    assert "counters_reconciled" not in reap(deps)  # first sighting: could be a lagging index
    assert deps.counters.tier_counts("free") == (3, 1)
    assert reap(deps)["counters_reconciled"] == 1
    assert deps.counters.tier_counts("free") == (1, 0)
    assert "counters_reconciled" not in reap(deps)


def test_reaper_leaves_counters_that_moved_between_passes(deps: Any, key: str) -> None:
    deps.counters.set_tier_counts("free", 2, 0)
    reap(deps)
    submit(deps, key)  # the counters move: the earlier sighting no longer holds
    assert "counters_reconciled" not in reap(deps)
    assert deps.counters.tier_counts("free") == (3, 0)


def test_reaper_redrives_a_retried_job_whose_new_message_was_lost(deps: Any, key: str) -> None:
    """The reaper re-queued a lost job but died (or SQS failed) before sending its new message: the job is
    queued with a due time, so a later pass sends it."""
    job_id = submit(deps, key)
    start_and_die(deps, job_id, 1)
    deps.queue.fail_sends = 1
    assert end_job(deps, deps.jobs.get(job_id), Lost()) is not None  # re-queued; its message send failed
    job = deps.jobs.get(job_id)
    assert job.status is JobStatus.QUEUED and job.due_at is not None
    deps.queue.sent.clear()
    deps.clock.advance(job.due_at - deps.clock.now() + 1)
    assert reap(deps).get("queued_redriven") == 1
    assert deps.queue.sent[-1][1] == job_id


def test_reaper_completes_what_a_worker_killed_after_the_state_write_left(deps: Any, key: str) -> None:
    """The job ended, but the worker died before its counter and slot writes: both drifts are repaired."""
    job_id = submit(deps, key)
    start_and_die(deps, job_id, 1)
    job = deps.jobs.get(job_id)
    deps.jobs.transition(
        job, JobStatus.SUCCEEDED, {"finished_at": deps.clock.now(), "due_at": None}, expected_attempts=1
    )
    actions = reap(deps)
    assert actions["slots_released"] == 1 and deps.counters.holders_of(job.key_id) == set()
    assert "counters_reconciled" not in actions  # noted on the first pass
    assert reap(deps)["counters_reconciled"] == 1
    assert deps.counters.tier_counts("free") == (0, 0)
