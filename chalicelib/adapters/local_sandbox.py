"""The local sandbox as a synchronous sandbox port: the runner core on this host, layers probed at start."""

from __future__ import annotations

import threading

from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxOffer


class LocalSandbox:
    cancellable = True  # a cancel kills the run

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        from chalicelib.sandbox.runner import execute

        return execute(request, cancel=cancel)

    def offer(self) -> SandboxOffer:
        from chalicelib.sandbox.local import probe_layers, refusal_reason
        from chalicelib.sandbox.offers import host_offer

        layers = probe_layers()
        return host_offer("local", layers, refusal_reason(layers), "probed on this host")
