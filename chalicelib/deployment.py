"""What app.py needs while it is imported: the app's name, its tiers and each tier's worker capacity.

Standard library only. Every function's cold start imports app.py, and its decorators need these numbers (the
SQS event sources' `maximum_concurrency`); the settings (chalicelib/config.py, pydantic) are read when a handler
first needs them. config.py builds its defaults from the table below, so the two cannot disagree; an override
this module cannot read with certainty is left to the settings (`worker_capacity` answers None).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

APP_NAME = "code-runner"
ENV_PREFIX = "CODERUNNER_"
# The tiers the platform is deployed with: each has its own queue and DLQ (infra/), its worker and DLQ
# functions (app.py: worker_<tier>, dlq_<tier>), alarms and local worker loops. This tuple is the one list;
# the settings refuse a tier that is not on it.
TIER_NAMES = ("free", "pro", "enterprise")

# What each tier may do by default (DESIGN.md section 5): chalicelib.config.TierPolicy's fields but the name.
DEFAULT_TIER_TABLE: dict[str, dict[str, Any]] = {
    "free": {
        "per_minute": 10,
        "per_day": 100,
        "concurrency": 2,
        "max_wall_time_s": 10,
        "max_memory_mb": 256,
        "queue_cap": 100,
        "weight": 1,
    },
    "pro": {
        "per_minute": 60,
        "per_day": 5_000,
        "concurrency": 10,
        "max_wall_time_s": 60,
        "max_memory_mb": 1_024,
        "queue_cap": 500,
        "weight": 4,
    },
    "enterprise": {
        "per_minute": 600,
        "per_day": 100_000,
        "concurrency": 50,
        "max_wall_time_s": 900,
        "max_memory_mb": 3_008,
        "queue_cap": 2_000,
        "weight": 16,
    },
}
# Worker concurrency of a tier = weight x this (the settings' `workers_per_weight`).
DEFAULT_WORKERS_PER_WEIGHT = 4

_POSITIVE = re.compile(r"[1-9][0-9]*")


def worker_capacity(tier: str, env: Mapping[str, str] | None = None) -> int | None:
    """`Settings.capacity(tier)` for the environment `env` (default: this process's), read without pydantic;
    None when an override is not a plain positive number (only the settings can say what it means, or refuse
    it). Names are matched without regard to case, as the settings do."""
    given = {key.lower(): value for key, value in (os.environ if env is None else env).items()}
    per_weight_raw = given.get(f"{ENV_PREFIX}WORKERS_PER_WEIGHT".lower())
    per_weight = DEFAULT_WORKERS_PER_WEIGHT
    if per_weight_raw is not None:
        if not _POSITIVE.fullmatch(per_weight_raw):
            return None
        per_weight = int(per_weight_raw)
    weight = _weight(tier, given.get(f"{ENV_PREFIX}TIERS_JSON".lower()))
    return None if weight is None else weight * per_weight


def _weight(tier: str, tiers_json: str | None) -> int | None:
    """The tier's weight: its override in CODERUNNER_TIERS_JSON if a plain positive int, else its default."""
    default = DEFAULT_TIER_TABLE.get(tier, {}).get("weight")
    if tiers_json is None:
        return default
    try:
        overrides = json.loads(tiers_json)
    except ValueError:
        return None
    if not isinstance(overrides, dict):
        return None
    override = overrides.get(tier, {})
    if not isinstance(override, dict):
        return None
    weight = override.get("weight", default)
    return weight if type(weight) is int and weight > 0 else None
