"""The Lambda sandbox: invoke a dedicated sandbox function synchronously with one ExecutionRequest.

There is one sandbox function per memory class (chalicelib/sandbox/selection.py): a job goes to the smallest
that holds its memory limit plus the function's own headroom, so a small job does not pay for a large one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from chalicelib.adapters.aws import LazyClient, long_call_client
from chalicelib.domain.errors import BackendRejected
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxUnavailable
from chalicelib.sandbox.runtimes import UnknownRuntime
from chalicelib.sandbox.selection import sandbox_function_name

# Errors raised by the sandbox function for a request it refuses: not retryable, the request is wrong.
_REQUEST_ERRORS = {"UnknownRuntime", "InvalidRequest", "ToolArgsRejected", "ValidationError"}


class LambdaSandbox:
    """Runs jobs in the sandbox functions named `<prefix>_<memory class>` (app.py's `sandbox_<mb>`, deployed as
    `code-runner-<stage>-sandbox_<mb>`). A throttled invoke arrives as the client's `DependencyThrottled` (the
    worker backs off without spending an attempt), a refused invoke or a crashed function as
    `SandboxUnavailable`: all retryable, never the user's fault."""

    cancellable = False  # a synchronous invoke runs to its end: a cancelled job's result is discarded

    def __init__(self, function_prefix: str, client: Any = None) -> None:
        self.function_prefix = function_prefix
        self._client = client

    client = LazyClient("lambda", long_call_client)
    cancellable = False  # a synchronous invoke cannot be interrupted: the worker does not watch it

    def function_for(self, request: ExecutionRequest) -> str:
        """The sandbox function that holds the request's memory limit."""
        try:
            name = sandbox_function_name(request.limits.memory_mb)
        except ValueError as exc:
            raise SandboxUnavailable(str(exc)) from exc
        return f"{self.function_prefix}{name.removeprefix('sandbox')}"

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        """Invoke with `RequestResponse` and return the function's result.

        A synchronous invoke cannot be interrupted: `cancel` is accepted for the port's sake, and the
        sandbox function's own wall limit bounds how long a cancelled job keeps running.
        """
        try:
            response = self.client.invoke(
                FunctionName=self.function_for(request),
                InvocationType="RequestResponse",
                Payload=request.model_dump_json().encode(),
            )
            body = response["Payload"].read()
        except BackendRejected as exc:
            # e.g. the function does not exist: a deployment fault, not something the job did
            raise SandboxUnavailable(f"lambda sandbox invoke refused: {exc}") from exc
        if response.get("FunctionError"):
            raise _function_error(body)
        try:
            return ExecutionResult.model_validate_json(body).model_copy(update={"sandbox": "lambda"})
        except ValueError as exc:
            raise SandboxUnavailable("lambda sandbox returned a malformed result") from exc


def _function_error(body: bytes) -> Exception:
    try:
        error = json.loads(body or b"{}")
    except ValueError:
        error = {}
    kind = str(error.get("errorType", "")) if isinstance(error, dict) else ""
    message = str(error.get("errorMessage", "")) if isinstance(error, dict) else ""
    if kind in _REQUEST_ERRORS:
        return UnknownRuntime(message or kind)
    return SandboxUnavailable(f"lambda sandbox failed: {kind or 'error'}: {message}"[:500])
