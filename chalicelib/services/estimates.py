"""Estimated wait: jobs ahead x the tier's recent mean run time / the tier's worker capacity."""

from __future__ import annotations

import threading

from chalicelib.services.deps import Deps

_CACHE_S = 10.0  # run-time stats are read at most this often per process (keeps the submit path short)
_DEFAULT_RUN_MS = 1000.0
_cache: dict[str, tuple[float, float | None]] = {}
_lock = threading.Lock()


def recent_run_ms(deps: Deps, tier: str) -> float:
    now = deps.clock.now()
    with _lock:
        hit = _cache.get(tier)
    if hit is None or now - hit[0] > _CACHE_S:
        hit = (now, deps.counters.recent_run_ms(tier, now))
        with _lock:
            _cache[tier] = hit
    return hit[1] if hit[1] is not None else _DEFAULT_RUN_MS


def estimate_wait(deps: Deps, tier: str, ahead: int) -> float:
    """Seconds until a job with `ahead` jobs before it in `tier` is likely to start."""
    capacity = max(1, deps.settings.capacity(tier))
    waves = ahead // capacity
    return round(waves * recent_run_ms(deps, tier) / 1000.0, 1)


def clear_cache() -> None:
    with _lock:
        _cache.clear()
