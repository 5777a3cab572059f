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
from chalicelib.sandbox.models import (
    ExecutionResult,
    FailureReason,
    TestCase,
    TestResult,
    TestVerdict,
    first_failure,
    raw_bytes,
)
from chalicelib.sandbox.runtimes import RuntimeInfo, ToolInfo


def iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC with milliseconds (`2026-11-30T04:10:08.894Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


ECHO_BYTES = 1024  # a test case's input and expected output are echoed up to this many bytes


def _encoded(data: bytes, encoding: str) -> str:
    return base64.b64encode(data).decode("ascii") if encoding == "base64" else data.decode("utf-8", "replace")


def _echo(text: str) -> tuple[str, bool]:
    """`text` cut to ECHO_BYTES of UTF-8 (never inside a character), and whether it was cut."""
    data = text.encode()
    if len(data) <= ECHO_BYTES:
        return text, False
    return data[:ECHO_BYTES].decode("utf-8", "ignore"), True


class TestCaseView(BaseModel):
    """One graded case: what it ran (`stdin`, `expected_stdout`, each cut to 1 KiB with a flag) and what the
    program did (`stdout`/`stderr` in the job's output encoding)."""

    __test__ = False

    index: int = Field(description="1-based, in the order the tests were given")
    verdict: TestVerdict
    exit_code: int | None = None
    reason: FailureReason | None = None
    stdin: str | None = Field(None, description="the case's input (first 1 KiB); null for a job stored without it")
    stdin_truncated: bool = False
    expected_stdout: str | None = Field(None, description="the expected output (first 1 KiB)")
    expected_stdout_truncated: bool = False
    stdout: str = ""
    stderr: str = ""
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0

    @classmethod
    def of(cls, index: int, case: TestResult, given: TestCase | None, encoding: str) -> TestCaseView:
        stdin, stdin_cut = _echo(given.stdin) if given is not None else (None, False)
        expected, expected_cut = _echo(given.expected_stdout) if given is not None else (None, False)
        return cls(
            index=index,
            verdict=case.verdict,
            exit_code=case.exit_code,
            reason=case.reason,
            stdin=stdin,
            stdin_truncated=stdin_cut,
            expected_stdout=expected,
            expected_stdout_truncated=expected_cut,
            stdout=_encoded(raw_bytes(case.stdout, case.stdout_raw), encoding),
            stderr=_encoded(raw_bytes(case.stderr, case.stderr_raw), encoding),
            wall_ms=case.wall_ms,
            cpu_ms=case.cpu_ms,
            max_rss_kb=case.max_rss_kb,
        )


class TestSummaryView(BaseModel):
    """Counts over the graded cases, and each case."""

    __test__ = False

    total: int
    accepted: int
    cases: list[TestCaseView]


class ResultView(BaseModel):
    """What the run did. `stdout`/`stderr` are UTF-8 text (invalid bytes replaced), or base64 of the exact
    bytes on request. With tests, the top-level fields describe the first failing case (or the last one),
    `verdict` grades the job, and `reason` is set whenever a case failed (`wrong_answer` for a wrong output).
    `full_result_url`: this is a preview of a result too large to answer here (outputs cut, the test cases'
    outputs dropped); the whole result, as JSON of the same shape with UTF-8 outputs, is at that URL for an
    hour."""

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
    tests: TestSummaryView | None = None
    verdict: TestVerdict | None = Field(None, description="with tests: the first failing case's, or accepted")
    encoding: Literal["utf-8", "base64"] = "utf-8"
    full_result_url: str | None = None

    @classmethod
    def of(
        cls,
        result: ExecutionResult,
        encoding: str,
        given: list[TestCase] | None = None,
        full_result_url: str | None = None,
    ) -> ResultView:
        """The view of a stored result; `given` are the job's test cases (echoed next to each case's output),
        `full_result_url` where the whole of a result shown as a preview is."""
        encoding = "base64" if encoding == "base64" else "utf-8"
        tests, verdict, reason = None, result.verdict, result.reason
        if result.tests is not None:
            given = given or []
            cases = [
                TestCaseView.of(i, case, given[i - 1] if i <= len(given) else None, encoding)
                for i, case in enumerate(result.tests.cases, 1)
            ]
            tests = TestSummaryView(total=result.tests.total, accepted=result.tests.accepted, cases=cases)
            verdict = verdict or first_failure(result.tests.cases)  # a result stored before `verdict` existed
            if reason is None and verdict is TestVerdict.WRONG_ANSWER:
                reason = FailureReason.WRONG_ANSWER
        return cls(
            exit_code=result.exit_code,
            signal=result.signal,
            reason=reason,
            stdout=_encoded(result.output_bytes("stdout"), encoding),
            stderr=_encoded(result.output_bytes("stderr"), encoding),
            stdout_truncated=result.stdout_truncated,
            stderr_truncated=result.stderr_truncated,
            wall_ms=result.wall_ms,
            cpu_ms=result.cpu_ms,
            max_rss_kb=result.max_rss_kb,
            tests=tests,
            verdict=verdict,
            encoding=encoding,
            full_result_url=full_result_url,
        )


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
    def of(
        cls,
        job: Job,
        position: int | None = None,
        estimated_wait_s: float | None = None,
        result: ResultView | None = None,
    ) -> JobView:
        """The job as shown; `result` replaces the one its record keeps (the whole result, or a preview)."""
        if result is None and job.result is not None:
            result = ResultView.of(job.result, job.spec.output_encoding, job.spec.tests)
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
            result=result,
            delivery=_delivery(job),
        )


def _delivery(job: Job) -> DeliveryView | None:
    if job.status.terminal and job.due_at is None and job.inbox_devices is None:
        return DeliveryView(event_id=None, webhook=None, inbox=[])  # nowhere to go: no event was produced
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
    scopes: list[str]  # what the key may run: ["*"], or e.g. ["tools"], ["runtime:python3"]
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


class RuntimesView(BaseModel):
    """`GET /v1/runtimes`: the languages and registered tools, with version, availability and default limits."""

    runtimes: list[RuntimeInfo]
    tools: list[ToolInfo]


class HealthView(BaseModel):
    """`GET /health`: the API answers (no dependency is checked); where the WebSocket channel listens."""

    status: Literal["ok"]
    stage: str
    websocket: str | None = None


class AckView(BaseModel):
    """`POST /v1/events/ack`: how many of the device's events were removed."""

    device: str
    removed: int


class TicketView(BaseModel):
    """`POST /v1/ws-tickets`: a single-use ticket for one WebSocket connect (`?ticket=`) within `expires_in` s."""

    ticket: str
    expires_in: int
    url: str | None = None


class WebhookSecretView(BaseModel):
    """The key's webhook signing secret (`whsec_...`); after a rotation the previous one keeps signing until
    `previous_secret_valid_until` (epoch seconds)."""

    secret: str
    previous_secret_valid_until: float | None = None


class WebhookUrlView(BaseModel):
    """The key's default webhook URL (null: none)."""

    url: str | None = None


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
