"""In-memory fakes of every port, shared by all unit tests (and checked against the real adapters by the
contract tests in tests/integration/test_contracts.py)."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from chalicelib.config import Settings
from chalicelib.domain.errors import QueueFull, QuotaExceeded, StaleState, Unauthorized
from chalicelib.domain.jobs import Job, JobStatus, check_transition
from chalicelib.domain.quotas import QuotaState, decide, rate_headers, refunded
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult
from chalicelib.services.deps import Deps
from chalicelib.services.ports import ApiKey, Page
from chalicelib.services.signals import InProcessSignals


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class MemoryJobStore:
    def __init__(self, orphan_after_s: int = 60) -> None:
        self.jobs: dict[str, Job] = {}
        self.due_at: dict[str, float | None] = {}
        self.lock = threading.Lock()
        self.orphan_after_s = orphan_after_s

    def create(self, job: Job) -> None:
        with self.lock:
            if job.id in self.jobs:
                raise StaleState("exists")
            self.jobs[job.id] = job
            self.due_at[job.id] = job.created_at + self.orphan_after_s

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def transition(
        self, job: Job, new: JobStatus, changes: dict[str, Any], *, expected_attempts: int | None = None
    ) -> Job:
        check_transition(job.status, new)
        with self.lock:
            cur = self.jobs.get(job.id)
            if cur is None or cur.status is not job.status:
                raise StaleState("status")
            if expected_attempts is not None and cur.attempts != expected_attempts:
                raise StaleState("attempts")
            updated = cur.model_copy(update={**changes, "status": new})
            self.jobs[job.id] = updated
            if new is JobStatus.QUEUED:
                self.due_at[job.id] = job.created_at + self.orphan_after_s if updated.attempts == 0 else None
            elif new is JobStatus.RUNNING:
                self.due_at[job.id] = updated.lease_until
            else:
                self.due_at[job.id] = None
            return updated

    def set_fields(self, job_id: str, changes: dict[str, Any], expected: JobStatus) -> bool:
        with self.lock:
            cur = self.jobs.get(job_id)
            if cur is None or cur.status is not expected:
                return False
            if "due_at" in changes:
                self.due_at[job_id] = changes.pop("due_at")
            self.jobs[job_id] = cur.model_copy(update=changes)
            return True

    def list_by_owner(self, owner: str, limit: int, cursor: str | None) -> Page:
        mine = sorted((j for j in self.jobs.values() if j.owner == owner), key=lambda j: -j.created_at)
        start = int(cursor or 0)
        page = mine[start : start + limit]
        return Page(page, str(start + limit) if start + limit < len(mine) else None)

    def count_queued_ahead(self, tier: str, seq: int) -> int:
        return sum(1 for j in self.jobs.values() if j.tier == tier and j.status is JobStatus.QUEUED and j.seq < seq)

    def due(self, status: JobStatus, now: float, limit: int = 100) -> list[Job]:
        return [
            j
            for j in self.jobs.values()
            if j.status is status and self.due_at.get(j.id) is not None and self.due_at[j.id] <= now  # type: ignore[operator]
        ][:limit]

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
            policy = self.settings.tier(key.tier)
            decision = decide(key.quota, now, policy)
            if not decision.allowed:
                headers = {**rate_headers(key.quota, now, policy), "Retry-After": str(decision.retry_after)}
                raise QuotaExceeded(decision.code or "rate_limited", "quota", headers)
            key = replace(key, quota=decision.state, total=key.total + 1)
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
        self.runs: dict[str, list[int]] = {}
        self.idem: dict[str, tuple[str, str]] = {}
        self.suspects: dict[str, object] = {}

    def _tier(self, tier: str) -> dict[str, int]:
        return self.tiers.setdefault(tier, {"queued": 0, "running": 0, "seq": 0})

    def reserve_queue_place(self, tier: str, cap: int) -> tuple[int, int]:
        with self.lock:
            t = self._tier(tier)
            if t["queued"] >= cap:
                raise QueueFull("full", None, {"Retry-After": "5"})
            t["queued"] += 1
            t["seq"] += 1
            return t["seq"], t["queued"] - 1

    def _add(self, tier: str, queued: int, running: int) -> None:
        with self.lock:
            t = self._tier(tier)
            t["queued"] += queued
            t["running"] += running

    def release_queue_place(self, tier: str) -> None:
        self._add(tier, -1, 0)

    def job_started(self, tier: str) -> None:
        self._add(tier, -1, 1)

    def job_finished(self, tier: str) -> None:
        self._add(tier, 0, -1)

    def job_requeued(self, tier: str) -> None:
        self._add(tier, 1, -1)

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

    def acquire_slot(self, owner: str, job_id: str, cap: int) -> bool:
        with self.lock:
            holders = self.slots.setdefault(owner, set())
            if job_id in holders or len(holders) < cap:
                holders.add(job_id)
                return True
            return False

    def release_slot(self, owner: str, job_id: str) -> None:
        with self.lock:
            self.slots.get(owner, set()).discard(job_id)

    def holders_of(self, owner: str) -> set[str]:
        return set(self.slots.get(owner, set()))

    def slot_holders(self) -> dict[str, set[str]]:
        return {k: set(v) for k, v in self.slots.items()}

    def record_run(self, tier: str, run_ms: int, now: float) -> None:
        self.runs.setdefault(tier, []).append(run_ms)

    def recent_run_ms(self, tier: str, now: float) -> float | None:
        runs = self.runs.get(tier)
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
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []  # (tier, job_id, group, dedup)
        self.dlq: list[tuple[str, str, str]] = []
        self.delays: list[tuple[str, int]] = []
        self.fail_sends = 0

    def send(self, job: Job, dedup_id: str | None = None) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise RuntimeError("injected SendMessage failure")
        self.sent.append((job.tier, job.id, job.group, dedup_id or job.id))

    def send_to_dlq(self, tier: str, job_id: str, reason: str) -> None:
        self.dlq.append((tier, job_id, reason))

    def delay(self, receipt_handle: str, tier: str, seconds: int) -> None:
        self.delays.append((receipt_handle, seconds))


class FakeSandbox:
    """Returns a scripted result (or raises) and records what it was asked to run."""

    def __init__(self, result: ExecutionResult | None = None) -> None:
        self.result = result or ExecutionResult(exit_code=0, stdout="ok\n", wall_ms=5)
        self.calls: list[ExecutionRequest] = []
        self.fail_with: list[Exception] = []

    def run(self, request: ExecutionRequest, cancel: Any = None) -> ExecutionResult:
        self.calls.append(request)
        if self.fail_with:
            raise self.fail_with.pop(0)
        return self.result


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

    def count(self, name: str, **dims: str) -> float:
        return sum(v for n, v, d in self.points if n == name and all(d.get(k) == x for k, x in dims.items()))


def make_deps(settings: Settings | None = None, clock: FakeClock | None = None) -> Deps:
    settings = settings or Settings()
    return Deps(
        settings=settings,
        jobs=MemoryJobStore(settings.orphan_after_s),
        keys=MemoryKeyStore(settings),
        counters=MemoryCounters(),
        queue=MemoryQueue(),
        sandboxes={"local": FakeSandbox()},
        clock=clock or FakeClock(),
        metrics=ListMetrics(),
        signals=MemorySignals(),
    )
