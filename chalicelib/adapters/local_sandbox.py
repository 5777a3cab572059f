"""The local sandbox as a synchronous sandbox port: the runner core on this host, layers probed at start."""

from __future__ import annotations

import threading

from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxOffer


class LocalSandbox:
    cancellable = True  # a cancel kills the run

    def __init__(self, pool_size: int = 0) -> None:
        self.pool_size = pool_size  # prepared sandboxes kept ready (chalicelib/sandbox/pool.py)

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        from chalicelib.sandbox.local import worker_isolation
        from chalicelib.sandbox.runner import execute

        return execute(request, cancel=cancel, isolation=worker_isolation(self.pool_size))

    def offer(self) -> SandboxOffer:
        from chalicelib.sandbox.local import refusal_reason, worker_isolation
        from chalicelib.sandbox.offers import host_offer

        layers = worker_isolation(self.pool_size).layers()
        return host_offer("local", layers, refusal_reason(layers), "probed on this host")
