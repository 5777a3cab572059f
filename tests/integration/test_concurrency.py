"""Exactness under concurrency, on a moto server (single-item conditional updates are atomic there)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.config import TierPolicy
from chalicelib.domain.errors import CodeRunnerError
from chalicelib.domain.quotas import QuotaState, day_window, minute_window
from chalicelib.services.keys import create_key, hash_key
from chalicelib.services.submit import submit_job
from tests.fakes import FakeClock

JOB = {"runtime": "python", "source": "print(1)"}


def hammer(deps: Any, key: str, n: int) -> list[str]:
    """Submit `n` jobs from `n` threads at once; returns each outcome ("ok" or the error code)."""

    def one(_: int) -> str:
        try:
            submit_job(deps, key, JOB)
            return "ok"
        except CodeRunnerError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.fixture
def deps(stack_env: dict[str, Any]) -> Any:
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    deps.clock = FakeClock(time.time() // 60 * 60 + 5)  # well inside one minute: no window rollover
    return deps


@pytest.mark.parametrize("remaining", [0, 3, 10])
def test_per_minute_quota_admits_exactly_min_n_l(deps: Any, remaining: int) -> None:
    key = create_key(deps, "acme", "free")[0]
    for _ in range(10 - remaining):
        submit_job(deps, key, JOB)
    outcomes = hammer(deps, key, 16)
    assert outcomes.count("ok") == min(16, remaining)
    assert outcomes.count("rate_limited") == 16 - remaining


def test_daily_quota_admits_exactly_the_remainder(deps: Any) -> None:
    deps.settings.tiers["pro"] = TierPolicy(**{**deps.settings.tier("pro").model_dump(), "per_day": 7})
    deps.keys.tiers = deps.settings.tiers
    key = create_key(deps, "acme", "pro")[0]
    outcomes = hammer(deps, key, 20)
    assert outcomes.count("ok") == 7 and outcomes.count("daily_quota_exceeded") == 13


def test_queue_cap_admits_exactly_the_cap_and_refunds_the_rest(deps: Any) -> None:
    deps.settings.tiers["pro"] = TierPolicy(**{**deps.settings.tier("pro").model_dump(), "queue_cap": 5})
    deps.keys.tiers = deps.settings.tiers
    key = create_key(deps, "acme", "pro")[0]
    outcomes = hammer(deps, key, 16)
    assert outcomes.count("ok") == 5 and outcomes.count("queue_full") == 11
    used = deps.keys.get(next(k.key_hash for k in deps.keys.list() if k.owner == "acme")).quota
    assert used.m_n == 5 and used.d_n == 5  # refused submits consumed nothing
    assert deps.counters.tier_counts("pro") == (5, 0)


def test_window_rollover_under_concurrency(deps: Any) -> None:
    key = create_key(deps, "acme", "free")[0]
    for _ in range(10):
        submit_job(deps, key, JOB)
    deps.clock.advance(60)  # every thread sees a stale minute and races to roll it over
    outcomes = hammer(deps, key, 16)
    assert outcomes.count("ok") == 10


def charge_at_once(deps: Any, key_hash: str, n: int) -> list[str]:
    """`n` threads charge one key at the same instant (a barrier), straight through the key store."""
    start = threading.Barrier(n)

    def one(_: int) -> str:
        start.wait()
        try:
            deps.keys.charge(key_hash, deps.clock.now())
            return "ok"
        except CodeRunnerError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.parametrize("boundary", ["minute", "day", "first_charge"])
def test_a_crowd_under_quota_rolling_a_window_over_is_never_refused(deps: Any, boundary: str) -> None:
    """Every writer of a crowd sees a stale window at once (a new minute, a new UTC day, or a key never charged):
    exactly one rolls it over, the rest count in the new window; nobody under quota is refused, nothing is lost."""
    key_hash = hash_key(create_key(deps, "acme", "enterprise")[0])
    before = 0 if boundary == "first_charge" else 5
    for _ in range(before):
        deps.keys.charge(key_hash, deps.clock.now())
    charged_day = day_window(deps.clock.now())
    if boundary == "minute":
        deps.clock.advance(60)
    elif boundary == "day":
        deps.clock.t = (deps.clock.t // 86400 + 1) * 86400 + 5
    n = 48
    outcomes = charge_at_once(deps, key_hash, n)
    assert outcomes == ["ok"] * n, Counter(outcomes)
    key = deps.keys.get(key_hash)
    now = deps.clock.now()
    same_day = day_window(now) == charged_day
    assert key.quota == QuotaState(minute_window(now), n, day_window(now), n + (before if same_day else 0))
    assert key.total == before + n


def test_a_crowd_at_the_limit_after_a_rollover_gets_exactly_the_limit(deps: Any) -> None:
    key_hash = hash_key(create_key(deps, "acme", "pro")[0])  # 60 a minute
    for _ in range(60):
        deps.keys.charge(key_hash, deps.clock.now())
    deps.clock.advance(60)
    outcomes = charge_at_once(deps, key_hash, 72)
    assert outcomes.count("ok") == 60 and outcomes.count("rate_limited") == 12, Counter(outcomes)
    assert deps.keys.get(key_hash).quota.m_n == 60
