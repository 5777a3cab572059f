"""The Lambda sandbox: invoke the dedicated sandbox function synchronously with one ExecutionRequest."""

from __future__ import annotations

import json
import threading
from typing import Any

from chalicelib.adapters.aws import LazyClient, long_call_client
from chalicelib.domain.errors import BackendRejected
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxUnavailable
from chalicelib.sandbox.runtimes import UnknownRuntime

# Errors raised by the sandbox function for a request it refuses: not retryable, the request is wrong.
_REQUEST_ERRORS = {"UnknownRuntime", "InvalidRequest", "ToolArgsRejected", "ValidationError"}


class LambdaSandbox:
    """Runs jobs in the sandbox Lambda. Throttling and unavailability arrive as the client's PlatformFaults, a
    refused invoke or a crashed function as `SandboxUnavailable`: all retryable, never the user's fault."""

    def __init__(self, function_name: str, client: Any = None) -> None:
        self.function_name = function_name
        self._client = client

    client = LazyClient("lambda", long_call_client)
    cancellable = False  # a synchronous invoke cannot be interrupted: the worker does not watch it

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        """Invoke with `RequestResponse` and return the function's result.

        A synchronous invoke cannot be interrupted: `cancel` is accepted for the port's sake, and the
        sandbox function's own wall limit bounds how long a cancelled job keeps running.
        """
        try:
            response = self.client.invoke(
                FunctionName=self.function_name,
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
