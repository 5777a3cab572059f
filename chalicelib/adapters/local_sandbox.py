"""The local sandbox as a synchronous sandbox port: the runner core on this host, layers probed at start."""

from __future__ import annotations

import threading

from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult


class LocalSandbox:
    cancellable = True  # a cancel kills the run

    def __init__(self, pool_size: int = 0) -> None:
        self.pool_size = pool_size  # prepared sandboxes kept ready (chalicelib/sandbox/pool.py)

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        from chalicelib.sandbox.local import worker_isolation
        from chalicelib.sandbox.runner import execute

        return execute(request, cancel=cancel, isolation=worker_isolation(self.pool_size))
