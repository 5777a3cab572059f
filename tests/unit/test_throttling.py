"""Sizing that holds: a throttled sandbox is a platform back-off, never an attempt and never an `error`; and
with the sandboxes sized from the tiers' capacities, a burst that saturates every tier is never throttled."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.config import settings_from_env
from chalicelib.domain.errors import DependencyThrottled
from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult
from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES, memory_class
from chalicelib.services.keys import create_key
from chalicelib.services.reaper import dead_letter
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import RetryLater, handle_message
from tests.fakes import FakeSandbox, MemoryQueue, make_deps
from tests.waiting import wait_for

JOB = {"runtime": "python", "source": "print(1)"}
THROTTLE = DependencyThrottled("lambda throttled: TooManyRequestsException")


def test_a_throttle_backs_off_without_spending_an_attempt(deps: Any, key: str) -> None:
    sandbox = FakeSandbox()
    sandbox.fail_with = [THROTTLE] * 8
    deps.sandboxes["local"] = sandbox
    job_id = submit_job(deps, key, JOB).job.id
    delays = []
    for _ in range(8):
        with pytest.raises(RetryLater) as held:
            handle_message(deps, {"job_id": job_id})
        delays.append(held.value.delay_s)
        job = deps.jobs.get(job_id)
        assert job.status is JobStatus.QUEUED and job.attempts == 0
        assert deps.counters.holders_of(job.key_id) == set() and deps.counters.tier_counts("free") == (1, 0)
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]  # exponential, capped (throttle_cap_s)
    assert handle_message(deps, {"job_id": job_id}) == "succeeded"
    job = deps.jobs.get(job_id)
    assert job.attempts == 1 and job.throttles == 8 and deps.queue.dlq == []


def test_a_throttled_message_about_to_be_dead_lettered_is_renewed(deps: Any, key: str) -> None:
    sandbox = FakeSandbox()
    sandbox.fail_with = [THROTTLE]
    deps.sandboxes["local"] = sandbox
    job_id = submit_job(deps, key, JOB).job.id
    last = deps.settings.max_receive_count - 1  # one more receive and SQS would move it to the DLQ
    assert handle_message(deps, {"job_id": job_id}, receives=last) == "queued"  # acknowledged, not held
    assert deps.queue.sent[-1][1:] == (job_id, deps.jobs.get(job_id).group, f"{job_id}#throttle1")


def test_each_sandbox_class_is_sized_for_every_worker_that_may_use_it() -> None:
    settings = settings_from_env({})
    for size in SANDBOX_MEMORY_CLASSES:
        users = [t for t, p in settings.tiers.items() if (memory_class(p.max_memory_mb) or 0) >= size]
        assert settings.sandbox_concurrency(size) == sum(settings.capacity(t) for t in users)
    assert settings.sandbox_concurrency(min(SANDBOX_MEMORY_CLASSES)) == sum(map(settings.capacity, settings.tiers))


# -- a burst that saturates every tier -----------------------------------------------------------------------
class Sqs(MemoryQueue):
    """Per-tier FIFO queues with SQS's redrive: a message received more than maxReceiveCount times goes to the
    DLQ (whose consumer ends the job `error`)."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, queue.Queue[dict[str, Any]]] = {}
        self.lock = threading.Lock()

    def _deliver(self, name: str, dedup: str, body: dict[str, str]) -> None:
        with self.lock:
            if (name, dedup) in self._seen:
                return
            self._seen.add((name, dedup))
            self.queues.setdefault(name, queue.Queue()).put({"body": body, "receives": 0})


class ThrottlingSandbox(FakeSandbox):
    """Lambda's reserved concurrency: at most `limit` runs at once per memory class, a TooManyRequests beyond.
    The first runs hold until `release` is set, so the workers' concurrency builds up to its peak."""

    def __init__(self, limits: dict[int, int]) -> None:
        super().__init__()
        self.limits, self.running = limits, dict.fromkeys(limits, 0)
        self.peak, self.throttles = 0, 0
        self.release = threading.Event()
        self.lock = threading.Lock()

    def run(self, request: ExecutionRequest, cancel: Any = None) -> ExecutionResult:
        size = memory_class(request.limits.memory_mb) or 0
        with self.lock:
            if self.running[size] >= self.limits[size]:
                self.throttles += 1
                self.release.set()  # the sandbox is saturated: let the runs in flight finish
                raise DependencyThrottled("lambda throttled: TooManyRequestsException")
            self.running[size] += 1
            self.peak = max(self.peak, sum(self.running.values()))
        try:
            self.release.wait(timeout=30)
            return ExecutionResult(exit_code=0, stdout="ok\n", wall_ms=5)
        finally:
            with self.lock:
                self.running[size] -= 1


@dataclass
class Burst:
    deps: Any
    sandbox: ThrottlingSandbox
    jobs: list[str]
    stop: threading.Event

    def finish(self) -> list[Any]:
        """Wait for every job to end; the jobs as they ended."""
        try:
            wait_for(lambda: all(self.deps.jobs.get(j).status.terminal for j in self.jobs), "every job to end", 60)
        finally:
            self.stop.set()
        return [self.deps.jobs.get(j) for j in self.jobs]


def burst(limits: dict[int, int]) -> Burst:
    """Twice each tier's capacity in jobs, from enough keys to fill it, run by `capacity` workers per tier."""
    deps = make_deps()
    deps.queue = Sqs()
    sandbox = ThrottlingSandbox(limits)
    deps.sandboxes["local"] = sandbox
    jobs = []
    for tier, policy in deps.settings.tiers.items():
        capacity = deps.settings.capacity(tier)
        keys = [create_key(deps, f"{tier}-{n}", tier)[0] for n in range(capacity // policy.concurrency + 1)]
        for n in range(2 * capacity):
            jobs.append(submit_job(deps, keys[n % len(keys)], JOB).job.id)
    stop = threading.Event()

    def worker(tier: str) -> None:
        messages = deps.queue.queues[tier]
        while not stop.is_set():
            try:
                message = messages.get(timeout=0.05)
            except queue.Empty:
                continue
            message["receives"] += 1
            if message["receives"] > deps.settings.max_receive_count:
                dead_letter(deps, message["body"])  # SQS's redrive, then the DLQ consumer
                continue
            try:
                handle_message(deps, message["body"], message["receives"])
            except RetryLater:
                messages.put(message)  # visible again after its delay (not waited here)

    threads = [
        threading.Thread(target=worker, args=(tier,), daemon=True)
        for tier in deps.settings.tiers
        for _ in range(deps.settings.capacity(tier))
    ]
    for thread in threads:
        thread.start()
    return Burst(deps, sandbox, jobs, stop)


def test_sized_sandboxes_are_never_throttled_by_a_burst_that_saturates_every_tier() -> None:
    settings = settings_from_env({})
    limits = {size: settings.sandbox_concurrency(size) for size in SANDBOX_MEMORY_CLASSES}
    run = burst(limits)
    workers = sum(settings.capacity(t) for t in settings.tiers)
    try:
        wait_for(lambda: run.sandbox.peak >= workers, f"all {workers} workers running a job at once", 60)
    finally:
        run.sandbox.release.set()
    done = run.finish()
    assert run.sandbox.throttles == 0
    assert {job.status for job in done} == {JobStatus.SUCCEEDED}
    assert {job.attempts for job in done} == {1}


def test_an_undersized_sandbox_throttles_but_no_job_ends_in_error() -> None:
    """A new account's quota: the sandbox takes far fewer runs than the workers send."""
    run = burst(dict.fromkeys(SANDBOX_MEMORY_CLASSES, 8))
    done = run.finish()
    assert run.sandbox.throttles > 0
    assert {job.status for job in done} == {JobStatus.SUCCEEDED}, {j.id: j.error for j in done if j.error}
    assert {job.attempts for job in done} == {1} and run.deps.queue.dlq == []
    assert sum(job.throttles for job in done) == run.sandbox.throttles
