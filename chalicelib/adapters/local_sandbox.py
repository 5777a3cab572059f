"""The local sandbox as the worker's Sandbox port: the runner core on this host, layers probed at start."""

from __future__ import annotations

from typing import Any

from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult


class LocalSandbox:
    def run(self, request: ExecutionRequest, cancel: Any = None) -> ExecutionResult:
        from chalicelib.sandbox.runner import execute

        return execute(request, cancel=cancel)
