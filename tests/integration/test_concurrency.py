"""Exactness under concurrency, on a moto server (single-item conditional updates are atomic there)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.config import TierPolicy
from chalicelib.domain.errors import CodeRunnerError
from chalicelib.services.keys import create_key
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
