"""Estimated wait: how long a queued job should wait before it starts.

The model. A queued job starts once two things hold: its key has a free running slot, and its tier has a
free worker. Each gives a lower bound on the wait, and the estimate is the larger of the two:

- **key bound**: the key's jobs in flight submitted before this one (`key_ahead`, queued or running) run at
  most `cap` at a time (the tier's per-key concurrency), so this job gets a slot after
  `floor(key_ahead / cap)` waves, each as long as the key's recent mean run time (its runs in this 5-minute
  bucket and the last; the tier's mean when the key has none).
- **tier bound**: the tier's queued jobs ahead of this one (`tier_ahead`, its position) start at most
  `capacity` at a time (the tier's workers), so `floor(tier_ahead / capacity)` waves of the tier's recent
  mean run time.

Neither bound knows how far the running jobs have got, so a wave that is half done still counts whole: the
estimate errs late by up to one run time, and early when run times grow or the workers are busy with jobs of
other keys that are not ahead in the queue (running jobs count in the key bound only for the key's own).
Without any recent run, a run is taken to last `DEFAULT_RUN_MS`. `tests/bench.py` (`estimates`) measures
the error against real waits on the local stack; the README states the tolerance.
"""

from __future__ import annotations

import threading

from chalicelib.services.deps import Deps

_CACHE_S = 10.0  # run-time stats are read at most this often per process (keeps the submit path short)
_CACHE_MAX = 1024  # scopes cached at once (one per tier, one per busy key)
DEFAULT_RUN_MS = 1000.0
_cache: dict[str, tuple[float, float | None]] = {}
_lock = threading.Lock()


def key_scope(key_id: str) -> str:
    """The run-time statistics scope of one key (beside the tiers' scopes, which are tier names)."""
    return f"key#{key_id}"


def waves(ahead: int, at_once: int) -> int:
    """How many rounds of `at_once` jobs must end before a job with `ahead` jobs before it starts."""
    return max(0, ahead) // max(1, at_once)


def wait_s(key_waves: int, key_run_ms: float, tier_waves: int, tier_run_ms: float) -> float:
    """The model: the larger of the key bound and the tier bound, in seconds (one decimal)."""
    return round(max(key_waves * key_run_ms, tier_waves * tier_run_ms) / 1000.0, 1)


def _recent_run_ms(deps: Deps, scope: str) -> float | None:
    now = deps.clock.now()
    with _lock:
        hit = _cache.get(scope)
    if hit is None or now - hit[0] > _CACHE_S:
        hit = (now, deps.counters.recent_run_ms(scope, now))
        with _lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[scope] = hit
    return hit[1]


def recent_run_ms(deps: Deps, tier: str) -> float:
    """The tier's recent mean run time (DEFAULT_RUN_MS when nothing ran lately)."""
    recent = _recent_run_ms(deps, tier)
    return recent if recent is not None else DEFAULT_RUN_MS


def estimate_wait(deps: Deps, tier: str, ahead: int, key_id: str | None = None, key_ahead: int = 0) -> float:
    """Seconds until a job is likely to start: `ahead` jobs of `tier` are queued before it, and `key_ahead`
    jobs of its key (`key_id`) are in flight before it. Without a key: the tier bound alone (`/v1/queue`)."""
    tier_run = recent_run_ms(deps, tier)
    key_waves = waves(key_ahead, deps.settings.tier(tier).concurrency) if key_id is not None else 0
    key_run = tier_run
    if key_waves and key_id is not None:  # the key's stats are read only when the key bound can matter
        key_run = _recent_run_ms(deps, key_scope(key_id)) or tier_run
    return wait_s(key_waves, key_run, waves(ahead, deps.settings.capacity(tier)), tier_run)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
