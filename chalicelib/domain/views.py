"""What the API answers, as pydantic models: the contract of DESIGN.md section 3 in one place.

Services return these; app.py dumps them to JSON. The OpenAPI document is generated from them.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.domain.webhooks import WebhookDelivery
from chalicelib.sandbox.models import ExecutionResult, FailureReason, TestSummary


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds (`2026-11-30T04:10:08.894Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ResultView(BaseModel):
    """What the run did. `stdout`/`stderr` are UTF-8 text (invalid bytes replaced), or base64 on request."""

    exit_code: int | None = None
    signal: str | None = None
    reason: FailureReason | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0
    tests: TestSummary | None = None
    encoding: Literal["utf-8", "base64"] = "utf-8"

    @classmethod
    def of(cls, result: ExecutionResult, encoding: str) -> ResultView:
        data: dict[str, Any] = result.model_dump(exclude={"sandbox"})
        if encoding == "base64":
            for name in ("stdout", "stderr"):
                data[name] = base64.b64encode(data[name].encode()).decode()
            data["encoding"] = "base64"
        return cls.model_validate(data)


class DeliveryView(BaseModel):
    """Where the job's job.finished event went: its id, the webhook's delivery state, the devices whose inbox
    got it. Null until the event is produced (right after the job ends)."""

    event_id: str | None = None
    webhook: WebhookDelivery | None = None
    inbox: list[str] = Field(default_factory=list)


class JobView(BaseModel):
    """A job as the API shows it."""

    id: str
    status: JobStatus
    tier: str
    runtime: str | None = None
    tool: str | None = None
    position: int | None = Field(None, description="jobs of the same tier ahead of this one, while queued")
    estimated_wait_s: float | None = None
    attempts: int = 0
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    queue_wait_ms: int | None = None
    sandbox: str | None = None
    error: str | None = None
    result: ResultView | None = None
    delivery: DeliveryView | None = None

    @classmethod
    def of(cls, job: Job, position: int | None = None, estimated_wait_s: float | None = None) -> JobView:
        return cls(
            id=job.id,
            status=job.status,
            tier=job.tier,
            runtime=job.spec.runtime,
            tool=job.spec.tool,
            position=position,
            estimated_wait_s=estimated_wait_s,
            attempts=job.attempts,
            created_at=iso(job.created_at) or "",
            started_at=iso(job.started_at),
            finished_at=iso(job.finished_at),
            queue_wait_ms=job.queue_wait_ms,
            sandbox=job.sandbox,
            error=job.error,
            result=ResultView.of(job.result, job.spec.output_encoding) if job.result is not None else None,
            delivery=_delivery(job),
        )


def _delivery(job: Job) -> DeliveryView | None:
    if job.inbox_devices is None:  # the event is not produced yet
        return None
    return DeliveryView(event_id=job.event_id, webhook=job.webhook_delivery, inbox=job.inbox_devices)


class JobsPage(BaseModel):
    """The caller's jobs, newest first; `next_cursor` pages on (null on the last page)."""

    jobs: list[JobView]
    next_cursor: str | None = None


class UsageWindow(BaseModel):
    limit: int
    used: int
    remaining: int
    reset: int = Field(description="epoch second when the window resets")


class ConcurrencyView(BaseModel):
    limit: int
    running: int


class UsageView(BaseModel):
    """The caller's limits, what is used, what remains and when each window resets."""

    key_id: str
    owner: str
    tier: str
    per_minute: UsageWindow
    per_day: UsageWindow
    concurrency: ConcurrencyView
    max_wall_time_s: float
    max_memory_mb: int


class TierQueueView(BaseModel):
    queued: int
    running: int
    capacity: int
    queue_cap: int
    estimated_wait_s: float


class QueueView(BaseModel):
    """Per tier: queued and running jobs, worker capacity, queue cap, estimated wait for a new job."""

    tiers: dict[str, TierQueueView]


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorView(BaseModel):
    """Every error the API answers."""

    error: ErrorDetail


class BatchItemView(BaseModel):
    """One job of a batch: accepted (status 202, `job`) or refused (its status and `error`)."""

    status: int
    job: JobView | None = None
    error: ErrorDetail | None = None


class BatchView(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemView]
