"""In-memory fakes of every port, shared by all unit tests (and checked against the real adapters by the
contract tests in tests/integration/test_contracts.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from chalicelib.config import Settings, settings_from_env
from chalicelib.domain.errors import AlreadyExists, QueueFull, StaleState, Unauthorized
from chalicelib.domain.jobs import Job, JobStatus, check_transition
from chalicelib.domain.quotas import QuotaState, charged, refunded
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxOffer, SandboxRefused
from chalicelib.services.deps import Deps
from chalicelib.services.estimates import key_scope
from chalicelib.services.ports import ApiKey, KeyLoad, Page, Slots, TaskStopped
from chalicelib.services.signals import InProcessSignals
from tests.fakes_delivery import memory_delivery

STATS_BUCKET_S = 300  # as the DynamoDB counters: recent = this 5-minute bucket and the previous one


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemoryJobStore:
    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()

    def create(self, job: Job) -> None:
        with self.lock:
            if job.id in self.jobs:
                raise AlreadyExists(job.id)
            self.jobs[job.id] = job

    def get(self, job_id: str, consistent: bool = True) -> Job | None:
        return self.jobs.get(job_id)

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        check_transition(job.status, new)
        unknown = set(changes) - set(Job.model_fields)
        if unknown:
            raise ValueError(f"not job fields: {sorted(unknown)}")
        with self.lock:
            cur = self.jobs.get(job.id)
            if cur is None or cur.status is not job.status:
                raise StaleState("status")
            if expected_attempts is not None and cur.attempts != expected_attempts:
                raise StaleState("attempts")
            updated = cur.model_copy(update={**changes, "status": new, "parked": False})
            self.jobs[job.id] = updated
            return updated

    def _set_if(self, job_id: str, ok: Any, **changes: Any) -> bool:
        with self.lock:
            cur = self.jobs.get(job_id)
            if cur is None or not ok(cur):
                return False
            self.jobs[job_id] = cur.model_copy(update=changes)
            return True

    def record_task(self, job_id: str, attempts: int, task_arn: str) -> bool:
        return self._set_if(
            job_id, lambda j: j.status is JobStatus.RUNNING and j.attempts == attempts, task_arn=task_arn
        )

    def set_due(self, job_id: str, status: JobStatus, due_at: float | None) -> bool:
        return self._set_if(job_id, lambda j: j.status is status, due_at=due_at)

    def mark_redriven_late(self, job_id: str) -> bool:
        return self._set_if(
            job_id, lambda j: j.status is JobStatus.QUEUED and not j.redriven_late, redriven_late=True, due_at=None
        )

    def park(self, job: Job) -> Job | None:
        with self.lock:
            cur = self.jobs.get(job.id)
            if cur is None or cur.status is not JobStatus.QUEUED or cur.attempts != job.attempts or cur.parked:
                return None
            parked = cur.model_copy(update={"parked": True, "parks": cur.parks + 1, "due_at": None})
            self.jobs[job.id] = parked
            return parked

    def unpark(self, job_id: str, due_at: float) -> Job | None:
        with self.lock:
            cur = self.jobs.get(job_id)
            if cur is None or cur.status is not JobStatus.QUEUED or not cur.parked:
                return None
            woken = cur.model_copy(update={"parked": False, "due_at": due_at})
            self.jobs[job_id] = woken
            return woken

    def parked_of(self, key_id: str, limit: int) -> list[tuple[int, str]]:
        parked = sorted((j.seq, j.id) for j in self.jobs.values() if j.parked and j.key_id == key_id)
        return parked[:limit]

    def parked_keys(self) -> set[str]:
        return {j.key_id for j in self.jobs.values() if j.parked}

    def list_by_owner(self, owner: str, limit: int, cursor: str | None, status: JobStatus | None = None) -> Page:
        mine = sorted(
            (j for j in self.jobs.values() if j.owner == owner and status in (None, j.status)),
            key=lambda j: -j.created_at,
        )
        start = 0
        if cursor is not None:  # "<owner>#<offset>": like DynamoDB's page keys, bound to the owner
            cursor_owner, _, offset = cursor.rpartition("#")
            if cursor_owner != owner or not (offset.isascii() and offset.isdigit()) or len(offset) > 9:
                raise ValueError("not a cursor this store issued")
            start = int(offset)
        page = mine[start : start + limit]
        return Page(page, f"{owner}#{start + limit}" if start + limit < len(mine) else None)

    def count_queued_ahead(self, tier: str, seq: int) -> int:
        return sum(1 for j in self.jobs.values() if j.tier == tier and j.status is JobStatus.QUEUED and j.seq < seq)

    def due(self, status: JobStatus, now: float, limit: int = 100) -> list[Job]:
        found = [j for j in self.jobs.values() if j.status is status and j.due_at is not None and j.due_at <= now]
        return found[:limit]

    def count_active(self, status: JobStatus, tier: str) -> int:
        return sum(1 for j in self.jobs.values() if j.status is status and j.tier == tier)


class MemoryKeyStore:
    def __init__(self, settings: Settings) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.settings = settings
        self.lock = threading.Lock()

    def put(self, key: ApiKey) -> None:
        self.keys[key.key_hash] = key

    def get(self, key_hash: str) -> ApiKey | None:
        return self.keys.get(key_hash)

    def list(self) -> list[ApiKey]:
        return sorted(self.keys.values(), key=lambda k: k.created_at)

    def update(self, key_id: str, **changes: Any) -> ApiKey | None:
        for h, k in self.keys.items():
            if k.key_id == key_id:
                self.keys[h] = replace(k, **changes)
                return self.keys[h]
        return None

    def charge(self, key_hash: str, now: float) -> tuple[ApiKey, QuotaState]:
        with self.lock:
            key = self.keys.get(key_hash)
            if key is None or key.revoked:
                raise Unauthorized("the API key is not valid")
            new = charged(key.quota, now, self.settings.tier(key.tier))
            key = replace(key, quota=new, total=key.total + 1)
            self.keys[key_hash] = key
            return key, key.quota

    def refund(self, key_hash: str, charged_minute: int | None, charged_day: str | None) -> None:
        with self.lock:
            key = self.keys.get(key_hash)
            if key is not None:
                self.keys[key_hash] = replace(key, quota=refunded(key.quota, charged_minute, charged_day))


class MemoryCounters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tiers: dict[str, dict[str, int]] = {}
        self.slots: dict[str, set[str]] = {}
        self.active: dict[str, set[str]] = {}
        self.parked: dict[str, int] = {}
        self.runs: dict[tuple[str, int], list[int]] = {}
        self.idem: dict[str, tuple[str, str]] = {}
        self.suspects: dict[str, object] = {}

    def _tier(self, tier: str) -> dict[str, int]:
        return self.tiers.setdefault(tier, {"queued": 0, "running": 0, "seq": 0})

    def reserve_queue_place(self, tier: str, cap: int) -> tuple[int, int]:
        with self.lock:
            t = self._tier(tier)
            if t["queued"] >= cap:
                raise QueueFull(tier, cap)
            t["queued"] += 1
            t["seq"] += 1
            return t["seq"], t["queued"] - 1

    def adjust_tier(self, tier: str, queued: int = 0, running: int = 0, run: tuple[int, float] | None = None) -> None:
        with self.lock:
            t = self._tier(tier)
            t["queued"] += queued
            t["running"] += running
        if run is not None:
            self.record_run(tier, *run)

    def tier_counts(self, tier: str) -> tuple[int, int]:
        t = self._tier(tier)
        return max(0, t["queued"]), max(0, t["running"])

    def set_tier_counts(self, tier: str, queued: int, running: int) -> None:
        with self.lock:
            self._tier(tier).update(queued=queued, running=running)

    def correct_tier_counts(self, tier: str, counted: tuple[int, int]) -> bool:
        with self.lock:
            t = self._tier(tier)
            observed = (t["queued"], t["running"])
            sighting = (observed, counted)
            if observed == counted:
                self.suspects.pop(tier, None)
                return False
            if self.suspects.get(tier) == sighting:
                t.update(queued=counted[0], running=counted[1])
                del self.suspects[tier]
                return True
            self.suspects[tier] = sighting
            return False

    def _slots(self, owner: str) -> Slots:
        return Slots(frozenset(self.slots.get(owner, set())), self.parked.get(owner, 0))

    def acquire_slot(self, owner: str, holder: str, cap: int) -> Slots | None:
        with self.lock:
            holders = self.slots.setdefault(owner, set())
            if holder in holders or len(holders) < cap:
                holders.add(holder)
                return self._slots(owner)
            return None

    def release_slot(
        self, owner: str, holder: str, ended: str | None = None, run: tuple[int, float] | None = None
    ) -> Slots:
        with self.lock:
            self.slots.setdefault(owner, set()).discard(holder)
            if ended is not None:
                self.active.get(owner, set()).discard(ended)
            if run is not None:
                self.record_run(key_scope(owner), *run)
            return self._slots(owner)

    def count_parked(self, owner: str, delta: int) -> Slots:
        with self.lock:
            self.parked[owner] = max(0, self.parked.get(owner, 0) + delta)
            return self._slots(owner)

    def reset_parked(self, owner: str, seen: int) -> bool:
        with self.lock:
            if self.parked.get(owner, 0) != seen:
                return False
            self.parked[owner] = 0
            return True

    def holders_of(self, owner: str) -> set[str]:
        return set(self.slots.get(owner, set()))

    def slot_holders(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.slots.items()}

    def track_active(self, owner: str, job_id: str) -> KeyLoad:
        with self.lock:
            self.active.setdefault(owner, set()).add(job_id)
        return self.key_load(owner)

    def key_load(self, owner: str) -> KeyLoad:
        return KeyLoad(frozenset(self.active.get(owner, set())), len(self.slots.get(owner, set())))

    def forget_active(self, owner: str, job_id: str) -> None:
        with self.lock:
            self.active.get(owner, set()).discard(job_id)

    def active_by_owner(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.active.items() if v}

    def all_slots(self) -> dict[str, Slots]:
        return {owner: self._slots(owner) for owner in set(self.slots) | set(self.parked)}

    def record_run(self, tier: str, run_ms: int, now: float) -> None:
        self.runs.setdefault((tier, int(now // STATS_BUCKET_S)), []).append(run_ms)

    def recent_run_ms(self, tier: str, now: float) -> float | None:
        bucket = int(now // STATS_BUCKET_S)
        runs = self.runs.get((tier, bucket), []) + self.runs.get((tier, bucket - 1), [])
        return sum(runs) / len(runs) if runs else None

    def claim_idempotency(self, scope: str, body_hash: str, job_id: str, now: float) -> tuple[str, str] | None:
        with self.lock:
            if scope in self.idem:
                return self.idem[scope]
            self.idem[scope] = (body_hash, job_id)
            return None

    def drop_idempotency(self, scope: str) -> None:
        self.idem.pop(scope, None)


class MemoryQueue:
    """Records every send; `delivered` is what a consumer would receive: like SQS FIFO, a repeated
    deduplication id is dropped (the fake keeps ids forever; SQS for 5 minutes)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []  # (tier, job_id, group, dedup)
        self.dlq: list[tuple[str, str, str]] = []
        self.delays: list[tuple[str, int]] = []
        self.fail_sends = 0
        self._seen: set[tuple[str, str]] = set()
        self.delivered: dict[str, list[dict[str, str]]] = {}  # queue ("free", "free-dlq") -> message bodies

    def _deliver(self, queue: str, dedup: str, body: dict[str, str]) -> None:
        if (queue, dedup) not in self._seen:
            self._seen.add((queue, dedup))
            self.delivered.setdefault(queue, []).append(body)

    def send(self, job: Job, dedup_id: str | None = None) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise RuntimeError("injected SendMessage failure")
        dedup = dedup_id or job.id
        self.sent.append((job.tier, job.id, job.group, dedup))
        body = {"job_id": job.id, "tier": job.tier, "key_id": job.key_id, "group": job.group or job.key_id}
        self._deliver(job.tier, dedup, body)

    def send_to_dlq(self, tier: str, job_id: str, reason: str) -> None:
        self.dlq.append((tier, job_id, reason))
        self._deliver(f"{tier}-dlq", f"{job_id}-dlq", {"job_id": job_id, "tier": tier, "reason": reason})

    def delay(self, receipt_handle: str, tier: str, seconds: int) -> None:
        self.delays.append((receipt_handle, seconds))


class FakeSandbox:
    """Returns a scripted result (or raises) and records what it was asked to run."""

    cancellable = True

    def __init__(self, result: ExecutionResult | None = None) -> None:
        self.result = result or ExecutionResult(exit_code=0, stdout="ok\n", wall_ms=5)
        self.calls: list[ExecutionRequest] = []
        self.fail_with: list[Exception] = []
        self.offered = _every_runtime("local")

    def run(self, request: ExecutionRequest, cancel: Any = None) -> ExecutionResult:
        self.calls.append(request)
        if self.fail_with:
            failure = self.fail_with.pop(0)
            if isinstance(failure, SandboxRefused):  # as the Lambda adapter: a refusal is what it offers now
                self.offered = self.offered.model_copy(update={"refusal": failure.reason})
            raise failure
        return self.result

    def offer(self) -> SandboxOffer:
        return self.offered


def _every_runtime(sandbox: str) -> SandboxOffer:
    return SandboxOffer(
        sandbox=sandbox,
        runtimes={"python3": "3", "node": "20", "bash": "5"},
        tools={"sort": "9", "wc": "9", "base64": "9"},
    )


class FakeTaskSandbox:
    """A task sandbox whose tasks 'run' until the test stops them: `finish` plays the platform's event."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, ExecutionRequest]] = []
        self.results: dict[str, ExecutionResult] = {}
        self.stopped_tasks: list[str] = []
        self.fail_with: list[Exception] = []
        self.offered = _every_runtime("fargate")

    def offer(self) -> SandboxOffer:
        return self.offered

    def launch(self, request: ExecutionRequest) -> str:
        if self.fail_with:
            raise self.fail_with.pop(0)
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/fake/{len(self.launched)}"
        self.launched.append((arn, request))
        return arn

    def stopped(self, event: dict[str, Any]) -> TaskStopped | None:
        if event.get("type") != "fake-task-stopped":
            return None
        return TaskStopped(event["job_id"], event["task_arn"], event.get("exit_code"), event.get("reason", ""))

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        return self.results.get(job_id)

    def stop(self, task_arn: str, reason: str) -> None:
        self.stopped_tasks.append(task_arn)

    @staticmethod
    def event(job_id: str, task_arn: str, reason: str = "Essential container in task exited") -> dict[str, Any]:
        return {"type": "fake-task-stopped", "job_id": job_id, "task_arn": task_arn, "reason": reason}


class MemoryBlobs:
    """Blobs in a dict; `url` is a fake address naming the key."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    def url(self, key: str, ttl_s: int) -> str:
        return f"https://blobs.invalid/{key}?ttl={ttl_s}"


class MemorySignals(InProcessSignals):
    """Job change announcements within the test process (the local stack's, minus the sockets), recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: list[str] = []

    def job_changed(self, job_id: str) -> None:
        self.changed.append(job_id)
        super().job_changed(job_id)


class ListMetrics:
    def __init__(self) -> None:
        self.points: list[tuple[str, float, dict[str, str]]] = []

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        self.points.append((name, value, dims))

    def flush(self) -> None:
        """Nothing to write: the points are the record."""

    def count(self, name: str, **dims: str) -> float:
        return sum(v for n, v, d in self.points if n == name and all(d.get(k) == x for k, x in dims.items()))


def make_deps(settings: Settings | None = None, clock: FakeClock | None = None) -> Deps:
    settings = settings or settings_from_env({})
    jobs = MemoryJobStore()
    return Deps(
        settings=settings,
        jobs=jobs,
        keys=MemoryKeyStore(settings),
        counters=MemoryCounters(),
        queue=MemoryQueue(),
        sandboxes={"local": FakeSandbox()},
        clock=clock or FakeClock(),
        metrics=ListMetrics(),
        delivery=memory_delivery(jobs),
        signals=MemorySignals(),
        blobs=MemoryBlobs(),
    )
