"""The wait estimate (services/estimates.py): the larger of the key bound (the key's jobs ahead, `cap` at a
time) and the tier bound (the tier's queue ahead, `capacity` at a time), each in waves of a recent run time."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.domain.exits import Finished
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services import estimates
from chalicelib.services.keys import create_key
from chalicelib.services.lifecycle import end_job
from chalicelib.services.queries import job_view, queue_status
from chalicelib.services.reaper import STALE_ACTIVE_S, reap
from chalicelib.services.submit import submit_job

SIX_S = {"runtime": "python", "source": "import time; time.sleep(6)"}


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    estimates.clear_cache()
    yield
    estimates.clear_cache()


@pytest.fixture
def ordered_ids(deps: Any) -> Any:
    """Job ids in submission order (real ids are time-ordered to the millisecond)."""
    counter = itertools.count(1)
    deps.new_id = lambda: f"{int(deps.clock.now() * 1000):012x}{next(counter):020x}"
    return deps


def test_waves_and_the_larger_bound() -> None:
    assert [estimates.waves(ahead, 2) for ahead in range(5)] == [0, 0, 1, 1, 2]
    assert estimates.waves(3, 0) == 3  # a cap of 0 counts as 1: never a division by zero
    assert estimates.wait_s(key_waves=2, key_run_ms=6000, tier_waves=1, tier_run_ms=6000) == 12.0
    assert estimates.wait_s(key_waves=0, key_run_ms=6000, tier_waves=3, tier_run_ms=500) == 1.5
    assert estimates.wait_s(0, 1, 0, 1) == 0.0


def test_five_six_second_jobs_on_a_free_key_wait_in_waves_of_two(ordered_ids: Any) -> None:
    """The issue's report: positions 0,0,0,1,2 and every estimate 0.0 while the fifth job waited ~12 s."""
    deps = ordered_ids
    plain, key = create_key(deps, "acme", "free")
    now = deps.clock.now()
    deps.counters.record_run("free", 6000, now)
    deps.counters.record_run(estimates.key_scope(key.key_id), 6000, now)
    accepted = [submit_job(deps, plain, SIX_S) for _ in range(5)]
    assert [a.estimated_wait_s for a in accepted] == [0.0, 0.0, 6.0, 6.0, 12.0]
    # The first two run for 6 s and end: the fifth has two of the key's jobs ahead, one wave.
    started = []
    for a in accepted[:2]:
        job = deps.jobs.get(a.job.id)
        started.append(deps.jobs.transition(job, job.status.RUNNING, {"attempts": 1, "started_at": now}))
    deps.clock.advance(6)
    for running in started:
        end_job(deps, running, Finished(ExecutionResult(exit_code=0, wall_ms=5900)))
    estimates.clear_cache()
    assert deps.counters.recent_run_ms(estimates.key_scope(key.key_id), deps.clock.now()) == 6000  # start to end
    fifth = job_view(deps, deps.jobs.get(accepted[4].job.id))
    assert fifth.position == 2 and fifth.estimated_wait_s == 6.0


def test_without_the_keys_own_runs_the_tiers_run_time_is_used(ordered_ids: Any) -> None:
    deps = ordered_ids
    plain, _ = create_key(deps, "acme", "free")
    deps.counters.record_run("free", 3000, deps.clock.now())
    waits = [submit_job(deps, plain, SIX_S).estimated_wait_s for _ in range(5)]
    assert waits == [0.0, 0.0, 3.0, 3.0, 6.0]


def test_with_nothing_run_lately_a_run_counts_one_second(ordered_ids: Any) -> None:
    deps = ordered_ids
    plain, _ = create_key(deps, "acme", "free")
    waits = [submit_job(deps, plain, SIX_S).estimated_wait_s for _ in range(3)]
    assert waits == [0.0, 0.0, estimates.DEFAULT_RUN_MS / 1000]


def test_other_keys_jobs_count_only_through_the_tier_bound(ordered_ids: Any) -> None:
    deps = ordered_ids
    deps.counters.record_run("free", 2000, deps.clock.now())
    capacity = deps.settings.capacity("free")
    others = [create_key(deps, f"user{i}", "free")[0] for i in range(capacity * 2)]
    for plain in others:  # one job each: no key bound, but the tier's workers are all taken twice over
        submit_job(deps, plain, SIX_S)
    mine = submit_job(deps, create_key(deps, "acme", "free")[0], SIX_S)
    assert mine.position == capacity * 2 and mine.estimated_wait_s == 4.0  # two waves of the tier's 2 s
    assert queue_status(deps).tiers["free"].estimated_wait_s == 4.0


def test_a_job_that_ended_leaves_its_keys_load_and_the_reaper_forgets_stale_ones(ordered_ids: Any) -> None:
    deps = ordered_ids
    plain, key = create_key(deps, "acme", "free")
    first = submit_job(deps, plain, SIX_S).job
    second = submit_job(deps, plain, SIX_S).job
    assert deps.counters.key_load(key.key_id).active == {first.id, second.id}
    job = deps.jobs.get(first.id)
    running = deps.jobs.transition(job, job.status.RUNNING, {"attempts": 1, "started_at": deps.clock.now()})
    end_job(deps, running, Finished(ExecutionResult(exit_code=0, wall_ms=10)))
    assert deps.counters.key_load(key.key_id).active == {second.id}
    # A crash between the second job's terminal write and its forget leaves it counted: the reaper repairs it.
    job = deps.jobs.get(second.id)
    deps.jobs.transition(job, job.status.CANCELLED, {"finished_at": deps.clock.now()})
    reap(deps)
    assert deps.counters.key_load(key.key_id).active == {second.id}  # too young to be looked at
    deps.clock.advance(STALE_ACTIVE_S + 1)
    assert reap(deps).get("active_forgotten") == 1
    assert deps.counters.key_load(key.key_id).active == frozenset()
