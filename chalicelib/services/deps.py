"""The bundle of ports every use case receives (wired once in `bootstrap`)."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from chalicelib.config import Settings
from chalicelib.services.delivery_ports import DeliveryPorts
from chalicelib.services.ports import (
    Clock,
    Counters,
    JobQueue,
    JobSignals,
    JobStore,
    KeyStore,
    MetricsSink,
    SyncSandbox,
    TaskSandbox,
)
from chalicelib.services.signals import PolledJobSignals


class SystemClock:
    def now(self) -> float:
        return time.time()


def new_job_id() -> str:
    """Time-ordered, unguessable job ids: 12 hex digits of milliseconds, then 20 random ones."""
    return f"{int(time.time() * 1000):012x}{uuid.uuid4().hex[:20]}"


@dataclass
class Deps:
    settings: Settings
    jobs: JobStore
    keys: KeyStore
    counters: Counters
    queue: JobQueue
    sandboxes: dict[str, SyncSandbox] = field(default_factory=dict)  # "local" | "lambda"
    tasks: dict[str, TaskSandbox] = field(default_factory=dict)  # "fargate"
    clock: Clock = field(default_factory=SystemClock)
    new_id: Callable[[], str] = new_job_id
    metrics: MetricsSink | None = None  # None records nothing
    signals: JobSignals = field(default_factory=PolledJobSignals)  # job change announcements (local stack)
    delivery: DeliveryPorts | None = None  # results to their users (services/delivery.py); None delivers nothing

    def metric(self, name: str, value: float = 1, unit: str = "Count", **dims: str) -> None:
        """Record one metric point (EMF in the cloud); never lets a metrics failure break a job."""
        if self.metrics is not None:
            with contextlib.suppress(Exception):  # metrics are best effort
                self.metrics.add(name, value, unit, dims)
