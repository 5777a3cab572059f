"""Settings, read once from the environment into pydantic models. Tiers and their limits live here."""

from __future__ import annotations

import json
import os
from functools import lru_cache

from pydantic import BaseModel, Field, model_validator

APP_NAME = "code-runner"
TIER_NAMES = ("free", "pro", "enterprise")


class TierPolicy(BaseModel):
    """What one tier may do (DESIGN.md section 5); operators override it with CODERUNNER_TIERS_JSON."""

    name: str
    per_minute: int = Field(gt=0)
    per_day: int = Field(gt=0)
    concurrency: int = Field(gt=0)  # jobs running at once per key
    max_wall_time_s: float = Field(gt=0)
    max_memory_mb: int = Field(gt=0)
    queue_cap: int = Field(gt=0)  # queued jobs in the tier before submits get 503
    weight: int = Field(gt=0)  # share of worker capacity


DEFAULT_TIERS: dict[str, TierPolicy] = {
    "free": TierPolicy(
        name="free",
        per_minute=10,
        per_day=100,
        concurrency=2,
        max_wall_time_s=10,
        max_memory_mb=256,
        queue_cap=100,
        weight=1,
    ),
    "pro": TierPolicy(
        name="pro",
        per_minute=60,
        per_day=5_000,
        concurrency=10,
        max_wall_time_s=60,
        max_memory_mb=1_024,
        queue_cap=500,
        weight=4,
    ),
    "enterprise": TierPolicy(
        name="enterprise",
        per_minute=600,
        per_day=100_000,
        concurrency=50,
        max_wall_time_s=900,
        max_memory_mb=3_008,
        queue_cap=2_000,
        weight=16,
    ),
}


class Settings(BaseModel):
    """Process-wide settings. Built once by `get_settings()`; tests build their own."""

    stage: str = "dev"
    tiers: dict[str, TierPolicy] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    # Sandbox: "local" runs on the worker's host (dev, single machine); "cloud" uses Lambda/Fargate.
    sandbox_mode: str = "local"
    sandbox_function: str = ""
    fargate_cluster: str = ""
    fargate_task_definition: str = ""
    fargate_subnets: list[str] = Field(default_factory=list)
    fargate_security_groups: list[str] = Field(default_factory=list)
    artifacts_bucket: str = ""
    # Worker behaviour
    # Worker concurrency of a tier = weight x this (Lambda maximum_concurrency). It must stay above every
    # tier's per-key cap, or one key's backlog takes all of its tier's workers (see DESIGN.md section 5).
    workers_per_weight: int = 4
    max_attempts: int = 3  # platform attempts before the job goes to the DLQ
    retry_base_s: int = 2  # exponential backoff base for platform retries (visibility timeout)
    slot_wait_s: int = 1  # how long a message waits before trying again for its owner's slot
    lease_grace_s: int = 30  # a running job past wall time + grace is reaped
    orphan_after_s: int = 60  # a queued job this old is re-sent (FIFO dedup drops it if it was sent)
    job_ttl_days: int = 7
    # Per-IP guard (before auth): requests per minute; a failed auth costs double.
    ip_per_minute: int = 300
    # Request size limits
    max_source_bytes: int = 64 * 1024
    max_stdin_bytes: int = 1024 * 1024
    max_body_bytes: int = 6 * 1024 * 1024
    # Side channel for the chaos test: the worker appends "job_id attempt" here before every run.
    run_log: str = ""
    # Local stack only: the directory of the processes' datagram sockets that announce job changes (a finished
    # job wakes its waiting GET, a cancel reaches the running job). Unset in AWS, where waiters poll.
    signal_dir: str = ""

    @model_validator(mode="after")
    def _workers_above_every_cap(self) -> Settings:
        for policy in self.tiers.values():
            if policy.weight * self.workers_per_weight <= policy.concurrency:
                raise ValueError(
                    f"tier '{policy.name}': {policy.weight * self.workers_per_weight} workers must be more than "
                    f"its per-key cap of {policy.concurrency}, or one key's backlog can starve the tier"
                )
        return self

    def tier(self, name: str) -> TierPolicy:
        """The policy of tier `name` (KeyError for an unknown tier)."""
        return self.tiers[name]

    def capacity(self, tier: str) -> int:
        """How many jobs of `tier` the workers run at once."""
        return self.tiers[tier].weight * self.workers_per_weight

    def table(self, name: str) -> str:
        """Physical name of one of the platform's DynamoDB tables ("jobs", "keys", "counters")."""
        return f"{APP_NAME}-{self.stage}-{name}"

    def queue(self, tier: str, dead_letter: bool = False) -> str:
        """Physical name of a tier's FIFO queue or its DLQ."""
        return f"{APP_NAME}-{self.stage}-{tier}{'-dlq' if dead_letter else ''}.fifo"


def _tiers_from_env(raw: str | None) -> dict[str, TierPolicy]:
    tiers = dict(DEFAULT_TIERS)
    if raw:
        for name, overrides in json.loads(raw).items():
            base = tiers[name].model_dump() if name in tiers else {"name": name}
            tiers[name] = TierPolicy.model_validate({**base, **overrides, "name": name})
    return tiers


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    """Parse the CODERUNNER_* variables once; unknown values fail loudly at start, not mid-request."""
    env = dict(os.environ if env is None else env)

    def get(name: str, default: str = "") -> str:
        return env.get(f"CODERUNNER_{name}", default)

    values: dict[str, object] = {
        "stage": get("STAGE", "dev"),
        "tiers": _tiers_from_env(get("TIERS_JSON") or None),
        "sandbox_mode": get("SANDBOX_MODE", "local"),
        "sandbox_function": get("SANDBOX_FUNCTION"),
        "fargate_cluster": get("FARGATE_CLUSTER"),
        "fargate_task_definition": get("FARGATE_TASK_DEFINITION"),
        "fargate_subnets": [s for s in get("FARGATE_SUBNETS").split(",") if s],
        "fargate_security_groups": [s for s in get("FARGATE_SECURITY_GROUPS").split(",") if s],
        "artifacts_bucket": get("ARTIFACTS_BUCKET"),
        "run_log": get("RUN_LOG"),
        "signal_dir": get("SIGNAL_DIR"),
    }
    for field in (
        "workers_per_weight",
        "max_attempts",
        "retry_base_s",
        "slot_wait_s",
        "lease_grace_s",
        "orphan_after_s",
        "ip_per_minute",
    ):
        raw = get(field.upper())
        if raw:
            values[field] = int(raw)
    return Settings.model_validate(values)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return settings_from_env()
