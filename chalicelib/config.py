"""Settings, read once from the environment (prefix CODERUNNER_) into a pydantic model. Tier policies live here.

Every field is settable from the environment: `CODERUNNER_<FIELD>` (e.g. CODERUNNER_MAX_ATTEMPTS=5), names matched
without regard to case, except the tier table, which is `CODERUNNER_TIERS_JSON` with per-tier overrides merged
over the defaults. Lists are comma-separated. The environment is read here, as pydantic-settings' environment
source would read it for this model (its import alone costs a cold start more than the model itself), and
pydantic validates it. A bad value fails where the settings are first read, before any work: when a local stack
process starts, and at a Lambda function's first event (importing app.py reads only the names and capacities in
chalicelib/deployment.py, whose table of tier defaults this module builds on, so the import pays no pydantic).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from chalicelib.deployment import APP_NAME as APP_NAME
from chalicelib.deployment import DEFAULT_TIER_TABLE, DEFAULT_WORKERS_PER_WEIGHT
from chalicelib.deployment import ENV_PREFIX as ENV_PREFIX
from chalicelib.deployment import TIER_NAMES as TIER_NAMES
from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES, memory_class

# SQS receives a job's message may use before SQS moves it to the tier's DLQ (the queues' maxReceiveCount):
# each platform attempt uses one, a duplicate delivery or a worker lost before it started the job one more,
# and nothing else does: a job waiting for its owner's slot is parked and its message deleted (services/
# parking.py), and a throttled sandbox renews the message before it runs out (services/worker.py). So a message
# received more often than this is a poison message, which the DLQ consumer ends `error` (refunded).
RECEIVE_SLACK = 2


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


# The defaults live with the names in chalicelib/deployment.py, which app.py reads at import without pydantic.
DEFAULT_TIERS: dict[str, TierPolicy] = {
    name: TierPolicy(name=name, **limits) for name, limits in DEFAULT_TIER_TABLE.items()
}

# The one setting whose variable is not CODERUNNER_<FIELD>, and the one read as JSON; list settings (CommaList)
# are read as given and split on commas.
_TIERS_VARIABLE = f"{ENV_PREFIX}TIERS_JSON"
CommaList = list[str]


class SettingsError(ValueError):
    """A variable that could not be decoded before validation (CODERUNNER_TIERS_JSON that is not JSON)."""


class Settings(BaseModel):
    """Process-wide settings. `get_settings()` reads them once; tests build their own with `model_validate` or
    `settings_from_env`. However built, this process's environment lies beneath the values given (pydantic calls
    `__init__` from `model_validate` too), as it did under pydantic-settings."""

    model_config = ConfigDict(extra="ignore", validate_default=True)

    stage: str = "dev"
    tiers: dict[str, TierPolicy] = Field(default_factory=lambda: dict(DEFAULT_TIERS))
    # Sandbox: "local" runs on the worker's host (dev, single machine); "cloud" uses Lambda/Fargate.
    sandbox_mode: Literal["local", "cloud"] = "local"
    sandbox_function: str = ""
    # Local sandbox: prepared sandboxes each worker process keeps ready (each holds one of the host's slots).
    sandbox_pool_size: int = Field(default=2, ge=0)
    fargate_cluster: str = ""
    fargate_task_definition: str = ""
    fargate_subnets: CommaList = Field(default_factory=list)
    fargate_security_groups: CommaList = Field(default_factory=list)
    artifacts_bucket: str = ""
    # Large job inputs and results (infra: ResultsBucket); objects expire with the jobs (job_ttl_days).
    results_bucket: str = ""
    # Worker behaviour
    # Worker concurrency of a tier = weight x this (Lambda maximum_concurrency). It must stay above every
    # tier's per-key cap, or one key's backlog takes all of its tier's workers (see DESIGN.md section 5).
    workers_per_weight: int = Field(default=DEFAULT_WORKERS_PER_WEIGHT, gt=0)
    max_attempts: int = Field(default=3, gt=0)  # platform attempts before the job errors (and is dead-lettered)
    retry_base_s: int = Field(default=2, gt=0)  # exponential backoff base for platform retries (visibility)
    throttle_cap_s: int = Field(default=60, gt=0)  # longest back-off after a throttled sandbox (never an attempt)
    lease_grace_s: int = Field(default=30, ge=0)  # a running job past wall time + grace is reaped
    # ... plus this for a task sandbox (Fargate), whose task must first be placed and pull its image.
    task_start_grace_s: int = Field(default=180, ge=0)
    orphan_after_s: int = Field(default=60, gt=0)  # a queued job not started this long after it was queued is re-sent
    job_ttl_days: int = Field(default=7, gt=0)
    # Per-IP guard (before auth): requests per minute; a failed auth costs double.
    ip_per_minute: int = Field(default=300, gt=0)
    # Request size limits (README "Limits"): what a job may carry is what every sandbox can take in one request
    # and answer in one response (a Lambda invoke carries at most 6 MB each way), and what the API can return.
    max_source_bytes: int = 64 * 1024
    max_stdin_bytes: int = 1024 * 1024  # stdin, and each test's stdin or expected output
    max_input_bytes: int = 4 * 1024 * 1024  # stdin plus every test's stdin and expected output
    max_args_bytes: int = 16 * 1024
    max_request_bytes: int = 5 * 1024 * 1024  # the job as the sandbox receives it, JSON-encoded
    max_body_bytes: int = 6 * 1024 * 1024
    # HMAC key of the page cursors the API issues (chalicelib/edge/cursors.py); set it in the cloud.
    cursor_secret: SecretStr = SecretStr("")
    # Delivery of results (DESIGN.md section 8). Webhooks go to public https URLs only; the local stage may
    # also allow loopback (http or https) so that tests and users can receive on this machine.
    webhook_allow_loopback: bool = False
    ws_url: str = ""  # the WebSocket channel's public URL (wss://...), shown by GET /health
    ws_management_url: str = ""  # its API Gateway management endpoint (post to a connection)
    # Side channel for the chaos test: the worker appends "job_id attempt" here before every run.
    run_log: str = ""
    # Local stack only: the directory of the processes' datagram sockets that announce job changes (a finished
    # job wakes its waiting GET, a cancel reaches the running job). Unset in AWS, where waiters poll.
    signal_dir: str = ""

    def __init__(self, **values: Any) -> None:
        super().__init__(**_merged(_GivenEnvironment(os.environ)(), values))

    @field_validator("tiers", mode="before")
    @classmethod
    def _merge_tier_overrides(cls, raw: Any) -> Any:
        """Per-tier overrides ({"free": {"per_minute": 5}}) merged over the defaults."""
        if not isinstance(raw, Mapping):
            return raw
        tiers: dict[str, Any] = {name: policy.model_dump() for name, policy in DEFAULT_TIERS.items()}
        for name, overrides in raw.items():
            given = overrides.model_dump() if isinstance(overrides, TierPolicy) else dict(overrides)
            tiers[name] = {**tiers.get(name, {}), **given, "name": name}
        return tiers

    @field_validator("fargate_subnets", "fargate_security_groups", mode="before")
    @classmethod
    def _comma_separated(cls, raw: Any) -> Any:
        return [part.strip() for part in raw.split(",") if part.strip()] if isinstance(raw, str) else raw

    @model_validator(mode="after")
    def _every_tier_deployed_and_fair(self) -> Settings:
        for policy in self.tiers.values():
            if policy.name not in TIER_NAMES:
                raise ValueError(
                    f"tier '{policy.name}' has no queue, DLQ, workers or alarms: add it to TIER_NAMES in "
                    f"chalicelib/deployment.py, declare worker_{policy.name} and dlq_{policy.name} in app.py, "
                    "and package again"
                )
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
        """How many jobs of `tier` the workers run at once: the one number per tier that sizes the tier's workers
        (Lambda maximum_concurrency, local worker threads) and, through `sandbox_concurrency`, the sandboxes."""
        return self.tiers[tier].weight * self.workers_per_weight

    def sandbox_concurrency(self, size: int) -> int:
        """Concurrent invocations the Lambda sandbox of memory class `size` must accept so that it never throttles
        a worker: every worker of every tier whose largest job may need that class (a worker runs one job)."""
        reach = {
            name: memory_class(policy.max_memory_mb) or max(SANDBOX_MEMORY_CLASSES)
            for name, policy in self.tiers.items()
        }
        return sum(self.capacity(name) for name, largest in reach.items() if largest >= size)

    @property
    def max_receive_count(self) -> int:
        """The queues' maxReceiveCount: every attempt plus RECEIVE_SLACK (see there)."""
        return self.max_attempts + RECEIVE_SLACK

    def table(self, name: str) -> str:
        """Physical name of one of the platform's DynamoDB tables ("jobs", "keys", "counters")."""
        return f"{APP_NAME}-{self.stage}-{name}"

    def webhook_queue(self, dead_letter: bool = False) -> str:
        """Physical name of the webhook delivery queue (standard: per-message delays) or its DLQ."""
        return f"{APP_NAME}-{self.stage}-webhooks{'-dlq' if dead_letter else ''}"

    def queue(self, tier: str, dead_letter: bool = False) -> str:
        """Physical name of a tier's FIFO queue or its DLQ."""
        return queue_name(self.stage, tier, dead_letter)


def queue_name(stage: str, tier: str, dead_letter: bool = False) -> str:
    """Physical name of a tier's FIFO queue or its DLQ on `stage` (app.py names its event sources with
    tier_resources directly: its import pays no pydantic)."""
    from chalicelib.tier_resources import tier_resources

    return tier_resources(tier).queue(stage, dead_letter)


class _GivenEnvironment:
    """The settings' raw values in an environment, by field, as pydantic-settings' environment source read them:
    `CODERUNNER_<FIELD>` matched without regard to case (the last of two spellings wins), the tier table decoded
    from CODERUNNER_TIERS_JSON (JSON null: unset); variables of no field are ignored."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._given = {key.lower(): value for key, value in env.items()}

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in Settings.model_fields:
            variable = (_TIERS_VARIABLE if field == "tiers" else f"{ENV_PREFIX}{field}").lower()
            if variable in self._given:
                values[field] = self._given[variable]
        if "tiers" in values:
            try:
                values["tiers"] = json.loads(values["tiers"])
            except ValueError as exc:
                source = type(self).__name__
                raise SettingsError(f'error parsing value for field "tiers" from source "{source}"') from exc
            if values["tiers"] is None:
                del values["tiers"]
        return values


def _merged(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on `under`, nested dicts merged key by key (CODERUNNER_TIERS_JSON under a given tier table), as
    pydantic-settings merged its sources."""
    out = dict(under)
    for key, value in over.items():
        below = out.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            out[key] = _merged(below, value)
        else:
            out[key] = value
    return out


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: this process's environment); unknown values fail loudly."""
    return Settings.model_validate(_GivenEnvironment(os.environ if env is None else env)())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return settings_from_env(os.environ)
