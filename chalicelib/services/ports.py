"""The ports the services depend on. Adapters (DynamoDB, SQS, sandboxes) and in-memory fakes implement them;
tests/integration/test_contracts.py runs the same assertions against both.

Adapters raise the project's own errors (chalicelib.domain.errors): `StaleState` for a lost conditional
write, `AlreadyExists`, `QueueFull`, `QuotaExceeded`, `Unauthorized`, and `PlatformFault` subclasses for a
throttled or failing dependency. Nothing above them sees botocore.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from chalicelib.domain.jobs import Job, JobStatus
from chalicelib.domain.quotas import QuotaState
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxOffer


@dataclass(frozen=True)
class ApiKey:
    """A stored API key (only its hash is kept)."""

    key_hash: str
    key_id: str
    owner: str
    tier: str
    created_at: float
    revoked: bool = False
    total: int = 0  # submits ever charged (spreads the key's jobs over its message groups)
    quota: QuotaState = field(default_factory=QuotaState)
    scopes: tuple[str, ...] = ("*",)  # what the key may run (chalicelib/domain/scopes.py)


@dataclass(frozen=True)
class KeyLoad:
    """A key's jobs in flight (queued or running, by id) and the running slots it holds: what its next
    job waits behind (services/estimates.py)."""

    active: frozenset[str]
    running: int

    def ahead_of(self, job_id: str) -> int:
        """The key's jobs in flight submitted before `job_id` (job ids are time-ordered)."""
        return sum(1 for other in self.active if other < job_id)


@dataclass(frozen=True)
class Slots:
    """One key's running slots as a write left them: who holds them, and how many of its jobs are parked
    waiting for one (a count kept beside the slots, so a release learns in the same write whom to wake)."""

    holders: frozenset[str] = frozenset()
    parked: int = 0


@dataclass(frozen=True)
class Page:
    items: list[Job]
    cursor: str | None


WaitChanged = Callable[[float], bool]
"""`wait_changed(timeout_s)`: block until the watched job is announced to have changed (True) or until
`timeout_s` passed or the watch closed (False)."""


class JobSignals(Protocol):
    """Announces that a job changed state, so whoever waits on it (a `GET ?wait`, the watcher of a running job)
    need not poll, where something can carry the announcement (the local stack). Best effort: a lost
    announcement only delays a waiter until its next poll, so every waiter still re-reads the job now and then."""

    @property
    def notifies(self) -> bool:
        """True when changes are announced (a waiter only needs a slow safety poll); False: it must poll."""

    def job_changed(self, job_id: str) -> None:
        """Announce that `job_id` changed state (started, finished, cancelled, errored)."""

    def watch(self, job_id: str) -> AbstractContextManager[WaitChanged]:
        """Listen for announcements about `job_id` for the duration of the block, which gets `wait_changed`.
        Start watching before reading the job, so a change between the read and the wait is not missed;
        leaving the block wakes a `wait_changed` blocked in another thread."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""


class MetricsSink(Protocol):
    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        """Record one point (best effort)."""

    def flush(self) -> None:
        """Write what this thread recorded (an invocation's points go out together when it ends)."""


class JobStore(Protocol):
    def create(self, job: Job) -> None:
        """Store a new job; AlreadyExists if the id is taken."""

    def get(self, job_id: str, consistent: bool = True) -> Job | None:
        """The job, or None; read consistently unless asked otherwise (a long-poll's repeated reads need not be:
        a read that lags sees the change on the next one, for half the cost)."""

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        """Move `job` from its current status to `new`, setting `changes` (Job fields), with a conditional
        write on the current status (and attempt number); StaleState when the job is not there any more."""

    def record_task(self, job_id: str, attempts: int, task_arn: str) -> bool:
        """Note the task that runs attempt `attempts` of a running job; False if the job moved on."""

    def set_due(self, job_id: str, status: JobStatus, due_at: float | None) -> bool:
        """Move the reaper's next look at a job still in `status`; False if it is not in `status`."""

    def mark_redriven_late(self, job_id: str) -> bool:
        """Flag a queued job as re-driven after the deduplication window (once); False if done or not queued."""

    def park(self, job: Job) -> Job | None:
        """Mark a queued job as parked (waiting for one of its owner's slots, with no message and no orphan
        check: `due_at` cleared), counting the park in `parks`; None if it is not queued at that attempt any
        more, or is parked already."""

    def unpark(self, job_id: str, due_at: float) -> Job | None:
        """Take the parked mark off a job that is still queued and parked (conditional: of two wakers, one
        wins), due for the orphan check at `due_at` again; the job as it is now, or None if it was not parked."""

    def parked_of(self, key_id: str, limit: int) -> list[tuple[int, str]]:
        """(seq, job id) of the key's parked jobs, oldest first (an index: may lag a park by a moment)."""

    def parked_keys(self) -> set[str]:
        """Every key with a parked job (the reaper's safety net)."""

    def list_by_owner(self, owner: str, limit: int, cursor: str | None, status: JobStatus | None = None) -> Page:
        """The owner's jobs (only those in `status`, if given), newest first, at most `limit`.
        ValueError for a cursor this store did not issue."""

    def count_queued_ahead(self, tier: str, seq: int) -> int:
        """How many jobs of `tier` are queued with a smaller sequence number."""

    def count_active(self, status: JobStatus, tier: str) -> int:
        """Jobs of `tier` in a non-terminal `status` (to reconcile the tier counters)."""

    def due(self, status: JobStatus, now: float, limit: int = 100) -> list[Job]:
        """Jobs in the non-terminal `status` whose `due_at` has passed."""


class KeyStore(Protocol):
    def put(self, key: ApiKey) -> None: ...

    def get(self, key_hash: str) -> ApiKey | None: ...

    def list(self) -> list[ApiKey]: ...

    def update(self, key_id: str, **changes: Any) -> ApiKey | None: ...

    def charge(self, key_hash: str, now: float) -> tuple[ApiKey, QuotaState]:
        """Authenticate and consume one submit atomically: Unauthorized or QuotaExceeded, else the new state."""

    def refund(self, key_hash: str, charged_minute: int | None, charged_day: str | None) -> None:
        """Give back one charge (platform's fault)."""


class Counters(Protocol):
    def reserve_queue_place(self, tier: str, cap: int) -> tuple[int, int]:
        """Count one more queued job in `tier`: (sequence number, jobs queued before it). QueueFull at cap."""

    def adjust_tier(self, tier: str, queued: int = 0, running: int = 0, run: tuple[int, float] | None = None) -> None:
        """Add the deltas to the tier's (queued, running) counters and, with `run` (run_ms, when), one run to the
        tier's recent run-time statistics, in the same write."""

    def tier_counts(self, tier: str) -> tuple[int, int]:
        """(queued, running) for the tier."""

    def set_tier_counts(self, tier: str, queued: int, running: int) -> None:
        """Overwrite the tier's counters (operators, tests)."""

    def correct_tier_counts(self, tier: str, counted: tuple[int, int]) -> bool:
        """Set the tier's (queued, running) to `counted` once the same drift was seen on two passes in a row
        and the counters did not move in between (so a lagging index or a racing submit is never "fixed")."""

    def acquire_slot(self, owner: str, holder: str, cap: int) -> Slots | None:
        """Take one of the owner's running slots for `holder` (idempotent): the slots after, or None when all
        `cap` are taken."""

    def release_slot(
        self, owner: str, holder: str, ended: str | None = None, run: tuple[int, float] | None = None
    ) -> Slots:
        """Give a slot back (idempotent); the slots after. `ended`: that job is terminal, so it also leaves the
        owner's jobs in flight; `run` (ms, when): the run joins the key's statistics (as `record_run` with
        `estimates.key_scope(owner)`): all in the same write, so a job's end costs one write on the owner's
        item, not three."""

    def count_parked(self, owner: str, delta: int) -> Slots:
        """Add `delta` (+1 on a park, -1 on a wake) to the owner's parked count (never below zero), in the same
        item as the slots, so that a park and a release cannot miss each other; the slots after."""

    def all_slots(self) -> dict[str, Slots]:
        """Every owner's slots and parked count (for the reaper: a scan)."""

    def reset_parked(self, owner: str, seen: int) -> bool:
        """Set the owner's parked count to 0 if it is still `seen` (the reaper found nothing parked)."""

    def holders_of(self, owner: str) -> set[str]:
        """The slot holders of one owner (one read)."""

    def slot_holders(self) -> dict[str, set[str]]:
        """Every owner's slot holders (for the reaper: a scan)."""

    def track_active(self, owner: str, job_id: str) -> KeyLoad:
        """Count `job_id` among the owner's jobs in flight (idempotent); the owner's load with it (one write)."""

    def key_load(self, owner: str) -> KeyLoad:
        """The owner's jobs in flight and the slots it holds (one read)."""

    def forget_active(self, owner: str, job_id: str) -> None:
        """The job is terminal: no longer in flight (idempotent)."""

    def active_by_owner(self) -> dict[str, set[str]]:
        """Every owner's jobs in flight (for the reaper: a scan)."""

    def record_run(self, tier: str, run_ms: int, now: float) -> None:
        """Add one run to the recent run-time statistics of `tier` (or of a key: `estimates.key_scope`)."""

    def recent_run_ms(self, tier: str, now: float) -> float | None:
        """Mean run time of the tier's (or key's) runs in this 5-minute bucket and the previous one, or None."""

    def claim_idempotency(self, scope: str, body_hash: str, job_id: str, now: float) -> tuple[str, str] | None:
        """Claim `scope` for this body; if already claimed return the stored (body_hash, job_id)."""

    def drop_idempotency(self, scope: str) -> None: ...


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str | None = None) -> None:
        """Put the job on its tier's FIFO queue (group per owner slot; dedup id the job id by default)."""

    def send_to_dlq(self, tier: str, job_id: str, reason: str) -> None:
        """Hand the job to its tier's dead-letter queue (once per job)."""

    def delay(self, receipt_handle: str, tier: str, seconds: int) -> None:
        """Make a received message visible again after `seconds` (retry backoff)."""


class BlobStore(Protocol):
    """Large job inputs and results, apart from the job's record (S3: the results bucket)."""

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (replacing what was there)."""

    def get(self, key: str) -> bytes | None:
        """The bytes under `key`, or None if there are none (expired)."""

    def url(self, key: str, ttl_s: int) -> str:
        """A URL that serves `key` to whoever has it for `ttl_s` seconds (no credentials needed)."""


class SyncSandbox(Protocol):
    """A sandbox that runs a job and answers with its result (local, Lambda). `cancellable`: whether setting
    `cancel` stops a run (a local run is killed; a Lambda invoke cannot be interrupted, so nobody watches it)."""

    cancellable: bool

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        """Run the request; SandboxUnavailable (a PlatformFault) when the platform cannot, SandboxRefused when
        a guarantee cannot hold there, ResultRejected when its answer is not sealed with the run's key."""

    def offer(self) -> SandboxOffer:
        """Its runtimes and tools with versions, its layers, and whether it refuses to run user code."""


@dataclass(frozen=True)
class TaskStopped:
    """A sandbox task that stopped, as its platform's event tells it."""

    job_id: str
    task_arn: str
    exit_code: int | None
    stopped_reason: str


class TaskSandbox(Protocol):
    """A sandbox that is launched now and completed later by an event (Fargate)."""

    def launch(self, request: ExecutionRequest) -> str:
        """Start the task; returns its id (ARN). SandboxUnavailable when it cannot start."""

    def stopped(self, event: dict[str, Any]) -> TaskStopped | None:
        """The task-stopped fact in a platform event, or None for an event about something else."""

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        """The result the task left, or None if it left none (ResultRejected, SandboxRefused as `run`)."""

    def offer(self) -> SandboxOffer:
        """Its runtimes and tools with versions (its layers are a task's own)."""

    def stop(self, task_arn: str, reason: str) -> None:
        """Stop a task (fine if it already stopped)."""
