"""The one place where adapters are wired into services. Nothing here touches AWS until first use.

Adapters and the settings are imported when the dependencies are first built, not when this module is: importing
the app (every function's cold start) then pays for neither boto3, pydantic, nor the adapters a function never
uses.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.services.deps import Deps
    from chalicelib.services.ports import JobSignals, SyncSandbox, TaskSandbox

_lock = threading.Lock()
_deps: Deps | None = None


def _sync_sandboxes(settings: Settings) -> dict[str, SyncSandbox]:
    out: dict[str, SyncSandbox] = {}
    if settings.sandbox_mode == "local":
        from chalicelib.adapters.local_sandbox import LocalSandbox

        out["local"] = LocalSandbox(pool_size=settings.sandbox_pool_size)
    if settings.sandbox_function:
        from chalicelib.adapters.lambda_sandbox import LambdaSandbox

        out["lambda"] = LambdaSandbox(settings.sandbox_function)
    return out


def _task_sandboxes(settings: Settings, sync: dict[str, SyncSandbox]) -> dict[str, TaskSandbox]:
    if not settings.fargate_cluster:
        return {}
    from chalicelib.adapters.fargate_sandbox import FargateSandbox

    fargate = FargateSandbox(
        cluster=settings.fargate_cluster,
        task_definition=settings.fargate_task_definition,
        subnets=settings.fargate_subnets,
        security_groups=settings.fargate_security_groups,
        bucket=settings.artifacts_bucket,
        image_twin=sync.get("lambda"),  # one image for both: what the function has, the task has
    )
    return {"fargate": fargate}


def _signals(settings: Settings) -> JobSignals:
    """Announced job changes in the local stack (its processes share a socket directory); polling elsewhere."""
    if settings.signal_dir:
        from chalicelib.adapters.signals_local import DatagramJobSignals

        return DatagramJobSignals(settings.signal_dir)
    from chalicelib.services.signals import PolledJobSignals

    return PolledJobSignals()


def build(settings: Settings) -> Deps:
    """Wire the DynamoDB/SQS adapters and the configured sandboxes for `settings`."""
    from chalicelib.adapters.counters_dynamodb import DynamoCounters
    from chalicelib.adapters.jobs_dynamodb import DynamoJobStore
    from chalicelib.adapters.keys_dynamodb import DynamoKeyStore
    from chalicelib.adapters.metrics import EmfMetrics, InMemoryMetrics
    from chalicelib.adapters.queue_sqs import SqsJobQueue
    from chalicelib.delivery_wiring import delivery_ports
    from chalicelib.services.deps import Deps

    in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    blobs = None
    if settings.results_bucket:
        from chalicelib.adapters.blobs_s3 import S3Blobs

        blobs = S3Blobs(settings.results_bucket)
    sync = _sync_sandboxes(settings)
    return Deps(
        settings=settings,
        jobs=DynamoJobStore(settings.table("jobs"), list(settings.tiers), ttl_days=settings.job_ttl_days),
        keys=DynamoKeyStore(settings.table("keys"), settings.tiers),
        counters=DynamoCounters(settings.table("counters")),
        queue=SqsJobQueue(settings.queue),
        sandboxes=sync,
        tasks=_task_sandboxes(settings, sync),
        metrics=EmfMetrics() if in_lambda else InMemoryMetrics(),
        signals=_signals(settings),
        delivery=delivery_ports(settings),
        blobs=blobs,
    )


def get_deps() -> Deps:
    """The process's dependencies, built on first use."""
    global _deps
    if _deps is None:
        from chalicelib.config import get_settings  # pydantic: not every cold start's import pays for it

        with _lock:
            if _deps is None:
                _deps = build(get_settings())
    return _deps


def reset() -> None:
    """Forget the wiring (tests change the environment between cases)."""
    global _deps
    from chalicelib.adapters.aws import reset_clients
    from chalicelib.config import get_settings

    with _lock:
        _deps = None
    get_settings.cache_clear()
    reset_clients()
