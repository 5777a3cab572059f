"""Job, JobStatus and its allowed transitions."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from chalicelib.domain.errors import IllegalTransition
from chalicelib.domain.webhooks import WebhookDelivery
from chalicelib.sandbox.models import ExecutionResult, SandboxLimits, SourceFile, TestCase


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    ERROR = "error"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


TERMINAL = frozenset(s for s in JobStatus if s.terminal)

# queued -> running -> terminal; queued -> cancelled | error; running -> queued is a platform retry.
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.ERROR}),
    JobStatus.RUNNING: frozenset(TERMINAL | {JobStatus.QUEUED}),
    **{s: frozenset() for s in TERMINAL},
}


def check_transition(current: JobStatus, new: JobStatus) -> None:
    """Raise IllegalTransition unless `current -> new` is allowed."""
    if new not in ALLOWED[current]:
        raise IllegalTransition(f"{current.value} -> {new.value} is not allowed")


def status_for(result: ExecutionResult) -> JobStatus:
    """The terminal status a sandbox result means (DESIGN.md section 4)."""
    reason = result.reason.value if result.reason is not None else None
    if reason in ("wall_time", "cpu_time"):
        return JobStatus.TIMED_OUT
    if reason == "cancelled":
        return JobStatus.CANCELLED
    if result.tests is not None:
        ok = result.tests.accepted == result.tests.total
        return JobStatus.SUCCEEDED if ok else JobStatus.FAILED
    return JobStatus.SUCCEEDED if reason is None else JobStatus.FAILED


class JobSpec(BaseModel):
    """What to run: validated, defaulted and capped. Stored with the job and sent to the sandbox."""

    runtime: str | None = None
    tool: str | None = None
    files: list[SourceFile] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    stdin: str = ""
    tests: list[TestCase] = Field(default_factory=list)
    limits: SandboxLimits
    sandbox: str = "auto"
    callback_url: str | None = None
    device: str | None = None  # the device its event goes to (default: every recently seen device of the key)
    output_encoding: str = "utf-8"  # or "base64"


class Job(BaseModel):
    """A job as stored and as returned (without `spec`, which stays internal)."""

    id: str
    owner: str
    key_id: str
    key_hash: str = ""  # the charged key, for refunds (never shown)
    tier: str
    status: JobStatus
    spec: JobSpec
    seq: int = 0  # order of submission within the tier (position)
    group: str = ""  # SQS message group
    attempts: int = 0
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    lease_until: float | None = None
    due_at: float | None = None  # when the reaper looks at it next: orphan check (queued), lease end (running)
    sandbox: str | None = None
    task_arn: str | None = None
    error: str | None = None
    charged_day: str | None = None
    charged_minute: int | None = None
    refunded: bool = False
    redriven_late: bool = False
    result: ExecutionResult | None = None
    # Delivery of its job.finished event (services/delivery.py): set once the event is produced.
    event_id: str | None = None
    inbox_devices: list[str] | None = None
    webhook_delivery: WebhookDelivery | None = None

    @property
    def queue_wait_ms(self) -> int | None:
        if self.started_at is None:
            return None
        return int((self.started_at - self.created_at) * 1000)
