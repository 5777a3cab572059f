"""One set of assertions run against the in-memory fakes and the DynamoDB adapters on a moto server, so the
fakes the unit tests trust cannot drift from the real thing."""

from __future__ import annotations

import time
from typing import Any

import pytest

from chalicelib.config import settings_from_env
from chalicelib.domain.errors import AlreadyExists, QueueFull, QuotaExceeded, StaleState, Unauthorized
from chalicelib.domain.jobs import Job, JobSpec, JobStatus
from chalicelib.sandbox.models import ExecutionResult, SandboxLimits
from chalicelib.services.ports import ApiKey, KeyLoad
from tests.fakes import MemoryCounters, MemoryJobStore, MemoryKeyStore

LIMITS = SandboxLimits(wall_time_s=1, cpu_time_s=1, memory_mb=64, output_kb=8, processes=8)


@pytest.fixture(params=["memory", "dynamodb"])
def stores(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        settings = settings_from_env({})
        return MemoryJobStore(), MemoryKeyStore(settings), MemoryCounters()
    request.getfixturevalue("stack_env")
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    return deps.jobs, deps.keys, deps.counters


def make_job(job_id: str, owner: str = "acme", seq: int = 1, created: float | None = None) -> Job:
    created = created or time.time()
    return Job(
        id=job_id,
        owner=owner,
        key_id="key_1",
        tier="free",
        status=JobStatus.QUEUED,
        spec=JobSpec(runtime="python3", limits=LIMITS),
        seq=seq,
        created_at=created,
        due_at=created + 60,
    )


def test_transitions_are_conditional_on_the_expected_state(stores: Any) -> None:
    jobs, _, _ = stores
    job = make_job("j1")
    jobs.create(job)
    running = jobs.transition(
        job, JobStatus.RUNNING, {"attempts": 1, "lease_until": time.time() + 5}, expected_attempts=0
    )
    with pytest.raises(StaleState):
        jobs.transition(job, JobStatus.RUNNING, {"attempts": 1}, expected_attempts=0)  # a duplicate delivery
    result = ExecutionResult(exit_code=0, stdout="héllo\n", wall_ms=3)
    done = jobs.transition(running, JobStatus.SUCCEEDED, {"result": result, "finished_at": 1.5}, expected_attempts=1)
    stored = jobs.get("j1")
    assert stored.status is JobStatus.SUCCEEDED and stored.result == result and stored.attempts == 1
    assert done.finished_at == stored.finished_at == 1.5
    with pytest.raises(StaleState):
        jobs.transition(running, JobStatus.CANCELLED, {}, expected_attempts=1)
    assert jobs.get("nope") is None


def test_queue_position_and_due_work(stores: Any) -> None:
    jobs, _, _ = stores
    now = time.time()
    for i in range(1, 5):
        jobs.create(make_job(f"q{i}", seq=i, created=now - 100))
    first = jobs.get("q1")
    changes = {"attempts": 1, "lease_until": now - 1, "due_at": now - 1}
    running = jobs.transition(first, JobStatus.RUNNING, changes, expected_attempts=0)
    assert jobs.count_queued_ahead("free", 4) == 2  # q2, q3 (q1 left the queue)
    assert jobs.count_queued_ahead("pro", 4) == 0
    assert [j.id for j in jobs.due(JobStatus.RUNNING, now)] == ["q1"]
    assert sorted(j.id for j in jobs.due(JobStatus.QUEUED, now)) == ["q2", "q3", "q4"]
    assert jobs.due(JobStatus.QUEUED, now - 1000) == []
    assert jobs.count_active(JobStatus.QUEUED, "free") == 3 and jobs.count_active(JobStatus.RUNNING, "free") == 1
    # the reaper moves its next look, and a terminal job leaves the work list
    assert jobs.set_due("q2", JobStatus.QUEUED, now + 90)
    assert not jobs.set_due("q2", JobStatus.RUNNING, now)  # not in that state: nothing written
    assert sorted(j.id for j in jobs.due(JobStatus.QUEUED, now)) == ["q3", "q4"]
    jobs.transition(running, JobStatus.FAILED, {"finished_at": now, "due_at": None}, expected_attempts=1)
    assert jobs.due(JobStatus.RUNNING, now) == [] and jobs.count_active(JobStatus.RUNNING, "free") == 0


def test_a_job_id_is_created_once(stores: Any) -> None:
    jobs, _, _ = stores
    jobs.create(make_job("dup"))
    with pytest.raises(AlreadyExists):
        jobs.create(make_job("dup"))


def test_task_and_late_redrive_marks_are_conditional(stores: Any) -> None:
    jobs, _, _ = stores
    job = make_job("t1")
    jobs.create(job)
    assert not jobs.record_task("t1", 1, "arn:task/1")  # not running
    running = jobs.transition(job, JobStatus.RUNNING, {"attempts": 1}, expected_attempts=0)
    assert not jobs.record_task("t1", 2, "arn:task/2")  # another attempt
    assert jobs.record_task("t1", 1, "arn:task/1") and jobs.get("t1").task_arn == "arn:task/1"
    jobs.transition(running, JobStatus.QUEUED, {"due_at": 5.0}, expected_attempts=1)
    assert jobs.mark_redriven_late("t1")
    assert not jobs.mark_redriven_late("t1")  # once
    stored = jobs.get("t1")
    assert stored.redriven_late and stored.due_at is None
    with pytest.raises(ValueError):
        jobs.transition(stored, JobStatus.CANCELLED, {"not_a_field": 1})


def test_listing_is_newest_first_and_paginated(stores: Any) -> None:
    jobs, _, _ = stores
    for i in range(5):
        jobs.create(make_job(f"l{i}", created=1000.0 + i))
    jobs.create(make_job("other", owner="globex"))
    page = jobs.list_by_owner("acme", 3, None)
    assert [j.id for j in page.items] == ["l4", "l3", "l2"] and page.cursor
    rest = jobs.list_by_owner("acme", 3, page.cursor)
    assert [j.id for j in rest.items] == ["l1", "l0"]
    for forged in ("not-a-cursor!", "bnVsbA==", "W10="):  # garbage, base64 of null, base64 of []
        with pytest.raises(ValueError):
            jobs.list_by_owner("acme", 3, forged)
    # A cursor is bound to its owner: another owner's page key would be a request DynamoDB refuses.
    with pytest.raises(ValueError):
        jobs.list_by_owner("globex", 3, page.cursor)


@pytest.mark.parametrize(
    "page_key",
    [
        {"id": {"S": "l1"}, "owner": {"S": "acme"}},  # a key attribute missing
        {"id": {"N": "1"}, "owner": {"S": "acme"}, "created_at": {"N": "1000"}},  # a wrong type
        {"id": {"S": "l1"}, "owner": {"S": "acme"}, "created_at": {"N": "1e999"}},  # not a time
        {"id": {"S": "l1"}, "owner": {"S": "acme"}, "created_at": {"N": "1000"}, "extra": {"S": "x"}},
    ],
)
def test_a_dynamodb_page_key_of_the_wrong_shape_is_refused_before_the_query(stack_env: Any, page_key: Any) -> None:
    import base64
    import json

    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    deps.jobs.create(make_job("l1", created=1000.0))
    forged = base64.urlsafe_b64encode(json.dumps(page_key).encode()).decode()
    with pytest.raises(ValueError):
        deps.jobs.list_by_owner("acme", 3, forged)


def test_keys_keep_their_scopes(stores: Any) -> None:
    _, keys, _ = stores
    keys.put(ApiKey(key_hash="h1", key_id="key_1", owner="acme", tier="free", created_at=1.0))
    keys.put(ApiKey("h2", "key_2", "acme", "free", 2.0, scopes=("runtime:python3", "tool:sort")))
    assert keys.get("h1").scopes == ("*",)  # a key made without scopes runs everything
    assert keys.get("h2").scopes == ("runtime:python3", "tool:sort")
    assert keys.update("key_1", scopes=("tools",)).scopes == ("tools",)
    assert keys.get("h1").scopes == ("tools",)
    assert [k.scopes for k in keys.list()] == [("tools",), ("runtime:python3", "tool:sort")]


def test_listing_filters_by_status(stores: Any) -> None:
    jobs, _, _ = stores
    for i in range(7):
        job = make_job(f"s{i}", created=1000.0 + i)
        jobs.create(job)
        if i % 2:
            jobs.transition(job, JobStatus.CANCELLED, {"finished_at": 1.0})
    page = jobs.list_by_owner("acme", 2, None, JobStatus.CANCELLED)
    assert [j.id for j in page.items] == ["s5", "s3"] and page.cursor
    rest = jobs.list_by_owner("acme", 2, page.cursor, JobStatus.CANCELLED)
    assert [j.id for j in rest.items] == ["s1"] and rest.cursor is None
    queued = jobs.list_by_owner("acme", 10, None, JobStatus.QUEUED)
    assert [j.id for j in queued.items] == ["s6", "s4", "s2", "s0"] and queued.cursor is None
    assert jobs.list_by_owner("acme", 10, None, JobStatus.FAILED).items == []


def test_keys_charge_and_refund(stores: Any) -> None:
    _, keys, _ = stores
    keys.put(ApiKey(key_hash="h1", key_id="key_1", owner="acme", tier="free", created_at=1.0))
    now = time.time()
    for i in range(10):
        key, quota = keys.charge("h1", now)
        assert quota.current(now).m_n == i + 1 and key.owner == "acme"
    with pytest.raises(QuotaExceeded) as err:
        keys.charge("h1", now)
    assert err.value.code == "rate_limited"
    keys.refund("h1", key.quota.m_win, key.quota.d_win)
    assert keys.get("h1").quota.m_n == 9
    key, quota = keys.charge("h1", now + 60)  # a new minute
    assert quota.m_n == 1 and quota.d_n == 10
    with pytest.raises(Unauthorized):
        keys.charge("nope", now)
    keys.update("key_1", revoked=True)
    with pytest.raises(Unauthorized):
        keys.charge("h1", now + 60)


def test_counters(stores: Any) -> None:
    _, _, counters = stores
    assert counters.reserve_queue_place("free", 2) == (1, 0)
    assert counters.reserve_queue_place("free", 2) == (2, 1)
    with pytest.raises(QueueFull):
        counters.reserve_queue_place("free", 2)
    counters.adjust_tier("free", queued=-1, running=1)
    assert counters.tier_counts("free") == (1, 1)
    counters.adjust_tier("free")  # no change: nothing written
    assert counters.tier_counts("free") == (1, 1)
    assert counters.acquire_slot("key_1", "a#1", 2) and counters.acquire_slot("key_1", "a#1", 2)
    assert counters.acquire_slot("key_1", "b#1", 2)
    assert not counters.acquire_slot("key_1", "c#1", 2)
    counters.release_slot("key_1", "a#1")
    assert counters.slot_holders()["key_1"] == {"b#1"}
    assert counters.claim_idempotency("s", "h", "j1", 1.0) is None
    assert counters.claim_idempotency("s", "h2", "j2", 1.0) == ("h", "j1")
    counters.drop_idempotency("s")
    assert counters.claim_idempotency("s", "h2", "j2", 1.0) is None
    now = time.time()
    assert counters.recent_run_ms("free", now) is None
    counters.record_run("free", 100, now - 300)  # the previous 5-minute bucket still counts
    counters.record_run("free", 300, now)
    assert counters.recent_run_ms("free", now) == 200
    assert counters.recent_run_ms("free", now + 900) is None  # older than two buckets: forgotten
    assert counters.recent_run_ms("pro", now) is None


def test_a_keys_jobs_in_flight_and_its_slots_make_its_load(stores: Any) -> None:
    _, _, counters = stores
    assert counters.key_load("key_9") == KeyLoad(frozenset(), 0)
    assert counters.track_active("key_9", "j1") == KeyLoad(frozenset({"j1"}), 0)
    assert counters.acquire_slot("key_9", "j1#1", 2)
    load = counters.track_active("key_9", "j2")
    assert load == KeyLoad(frozenset({"j1", "j2"}), 1) and load.ahead_of("j2") == 1 and load.ahead_of("j1") == 0
    assert counters.track_active("key_9", "j2") == load  # idempotent
    counters.track_active("key_8", "k1")
    assert counters.active_by_owner() == {"key_9": {"j1", "j2"}, "key_8": {"k1"}}
    counters.forget_active("key_9", "j1")
    counters.forget_active("key_9", "j1")  # idempotent
    counters.forget_active("key_8", "k1")
    assert counters.key_load("key_9") == KeyLoad(frozenset({"j2"}), 1)
    assert counters.active_by_owner() == {"key_9": {"j2"}}
    assert counters.slot_holders()["key_9"] == {"j1#1"}  # the slots are the slots
    counters.track_active("key_9", "j3")
    assert counters.acquire_slot("key_9", "j3#1", 2)
    after = counters.release_slot("key_9", "j3#1", ended="j3")  # a job's end: its slot and its place, one write
    assert after.holders == frozenset({"j1#1"})
    assert counters.key_load("key_9") == KeyLoad(frozenset({"j2"}), 1)
    assert counters.release_slot("key_9", "j3#1", ended="j3").holders == frozenset({"j1#1"})  # idempotent


def test_a_jobs_end_counts_its_run_in_the_keys_statistics_with_the_slots_release(stores: Any) -> None:
    from chalicelib.services.estimates import key_scope

    _, _, counters = stores
    now = time.time()
    counters.record_run(key_scope("key_7"), 100, now - 300)  # the previous bucket, recorded on its own
    for ms in (200, 600):
        assert counters.acquire_slot("key_7", f"j{ms}#1", 2)
        counters.release_slot("key_7", f"j{ms}#1", ended=f"j{ms}", run=(ms, now))
    assert counters.recent_run_ms(key_scope("key_7"), now) == 300  # (100 + 200 + 600) / 3, whichever write
    assert counters.holders_of("key_7") == set() and counters.recent_run_ms("key_7", now) is None  # not a tier's
    counters.release_slot("key_7", "gone#1", run=(900, now + 600))  # a later bucket takes the slot over
    assert counters.recent_run_ms(key_scope("key_7"), now + 600) == 900


def test_tier_counters_are_corrected_only_on_a_repeated_sighting(stores: Any) -> None:
    _, _, counters = stores
    counters.set_tier_counts("pro", 4, 2)
    assert counters.holders_of("nobody") == set()
    assert not counters.correct_tier_counts("pro", (1, 0))  # first sighting is only noted
    assert counters.tier_counts("pro") == (4, 2)
    assert counters.correct_tier_counts("pro", (1, 0))  # same drift again: corrected
    assert counters.tier_counts("pro") == (1, 0)
    counters.set_tier_counts("pro", 5, 0)
    assert not counters.correct_tier_counts("pro", (1, 0))
    counters.adjust_tier("pro", queued=-1)  # the counters moved since the sighting: not touched
    assert not counters.correct_tier_counts("pro", (1, 0))
    assert counters.tier_counts("pro") == (4, 0)


def test_parking_is_conditional_and_ordered_by_submission(stores: Any) -> None:
    jobs, _, _ = stores
    for job_id, seq in (("p3", 3), ("p1", 1), ("p2", 2)):
        jobs.create(make_job(job_id, seq=seq))
    parked = jobs.park(jobs.get("p3"))
    assert parked is not None and parked.parked and parked.parks == 1 and parked.due_at is None
    assert jobs.park(jobs.get("p3")) is None  # parked already
    jobs.park(jobs.get("p1"))
    jobs.park(jobs.get("p2"))
    assert jobs.parked_of("key_1", 5) == [(1, "p1"), (2, "p2"), (3, "p3")]
    assert jobs.parked_of("key_2", 5) == [] and jobs.parked_keys() == {"key_1"}
    woken = jobs.unpark("p1", 123.0)
    assert woken is not None and not woken.parked and woken.due_at == 123.0 and woken.parks == 1
    assert jobs.unpark("p1", 123.0) is None  # of two wakers, one wins
    assert not jobs.get("p1").parked and jobs.get("p2").parked
    # A state change ends the wait: a cancelled parked job leaves the index.
    cancelled = jobs.transition(jobs.get("p2"), JobStatus.CANCELLED, {"finished_at": 1.0})
    assert not cancelled.parked and not jobs.get("p2").parked
    assert jobs.parked_of("key_1", 5) == [(3, "p3")]
    started = jobs.transition(jobs.get("p1"), JobStatus.RUNNING, {"attempts": 1}, expected_attempts=0)
    assert jobs.park(started) is None  # not queued


def test_slots_carry_the_parked_count(stores: Any) -> None:
    _, _, counters = stores
    first = counters.acquire_slot("key_9", "a#1", 2)
    assert first is not None and first.holders == {"a#1"} and first.parked == 0
    assert counters.count_parked("key_9", +1).parked == 1
    taken = counters.acquire_slot("key_9", "b#1", 2)
    assert taken is not None and taken.holders == {"a#1", "b#1"} and taken.parked == 1
    assert counters.acquire_slot("key_9", "c#1", 2) is None
    after = counters.release_slot("key_9", "a#1")
    assert after.holders == {"b#1"} and after.parked == 1  # the release tells whom to wake
    assert counters.count_parked("key_9", -1).parked == 0
    assert counters.count_parked("key_9", -1).parked == 0  # never below zero
    counters.count_parked("key_9", +2)
    assert not counters.reset_parked("key_9", 1) and counters.reset_parked("key_9", 2)
    assert counters.all_slots()["key_9"].parked == 0
    assert counters.release_slot("key_9", "b#1").holders == frozenset()
