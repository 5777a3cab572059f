"""Regression (found by the chaos test): once a drift was noted, a pass that finds the counters right again
must clear the note. On DynamoDB that update failed ("ExpressionAttributeValues must not be empty"), so every
later cleanup pass raised before reconciling the remaining tiers."""

from __future__ import annotations

from typing import Any

from chalicelib.services.reaper import reap


def test_a_noted_drift_that_went_away_is_cleared(stack_env: dict[str, Any]) -> None:
    from chalicelib.bootstrap import get_deps

    counters = get_deps().counters
    counters.set_tier_counts("pro", 4, 2)
    assert not counters.correct_tier_counts("pro", (1, 0))  # first sighting: noted
    counters.set_tier_counts("pro", 1, 0)  # the drift resolved itself
    assert not counters.correct_tier_counts("pro", (1, 0))
    assert counters.tier_counts("pro") == (1, 0)


def test_cleanup_passes_keep_working_after_a_transient_drift(stack_env: dict[str, Any]) -> None:
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    deps.counters.set_tier_counts("free", 1, 0)  # no such job: a drift
    deps.counters.set_tier_counts("pro", 2, 0)  # and one in a later tier, which every pass must still reach
    assert "counters_reconciled" not in reap(deps)  # both noted
    deps.counters.set_tier_counts("free", 0, 0)  # the free drift went away by itself
    assert reap(deps).get("counters_reconciled") == 1  # the pass clears free's note and corrects pro
    assert deps.counters.tier_counts("free") == (0, 0) and deps.counters.tier_counts("pro") == (0, 0)
    assert "counters_reconciled" not in reap(deps)
