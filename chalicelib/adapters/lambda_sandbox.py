"""The Lambda sandbox: invoke a dedicated sandbox function synchronously with one ExecutionRequest.

There is one sandbox function per memory class (chalicelib/sandbox/selection.py): a job goes to the smallest
that holds its memory limit plus the function's own headroom, so a small job does not pay for a large one.

Each invocation carries a fresh key; the function seals its answer with it (chalicelib/sandbox/integrity.py)
and only an answer that opens with the key is accepted: a result forged by the job (say, posted to the
Runtime API through a hole) raises `ResultRejected`. A sealed refusal (a guarantee cannot hold in the
function) raises `SandboxRefused` and is remembered, so `offer()` shows it and `auto` stops choosing Lambda.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from chalicelib.adapters.aws import LazyClient, long_call_client
from chalicelib.domain.errors import BackendRejected, PlatformFault
from chalicelib.sandbox import integrity
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    SandboxOffer,
    SandboxRefused,
    SandboxUnavailable,
)
from chalicelib.sandbox.runtimes import UnknownRuntime
from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES, sandbox_function_name

# Errors raised by the sandbox function for a request it refuses: not retryable, the request is wrong.
_REQUEST_ERRORS = {"UnknownRuntime", "InvalidRequest", "ToolArgsRejected", "ValidationError"}
PROBE_JOB_ID = "probe"  # chalicelib.sandbox.lambda_entry.PROBE_JOB_ID


class LambdaSandbox:
    """Runs jobs in the sandbox functions named `<prefix>_<memory class>` (app.py's `sandbox_<mb>`, deployed as
    `code-runner-<stage>-sandbox_<mb>`). A throttled invoke arrives as the client's `DependencyThrottled` (the
    worker backs off without spending an attempt), a refused invoke or a crashed function as
    `SandboxUnavailable`: all retryable, never the user's fault. Every class runs the same image, so one probe
    (of the smallest) tells what all of them offer."""

    def __init__(self, function_prefix: str, client: Any = None, offer_ttl_s: float = 300) -> None:
        self.function_prefix = function_prefix
        self._client = client
        self._probe_client = client
        self.offer_ttl_s = offer_ttl_s
        self._offer: tuple[float, SandboxOffer] | None = None
        self._lock = threading.Lock()

    client = LazyClient("lambda", long_call_client)
    probe_client = LazyClient("lambda", attr="_probe_client")  # short timeouts: probes serve API requests
    cancellable = False  # a synchronous invoke cannot be interrupted: the worker does not watch it

    def function_for(self, memory_mb: int) -> str:
        """The sandbox function that holds a job limited to `memory_mb`."""
        try:
            name = sandbox_function_name(memory_mb)
        except ValueError as exc:
            raise SandboxUnavailable(str(exc)) from exc
        return f"{self.function_prefix}{name.removeprefix('sandbox')}"

    def run(self, request: ExecutionRequest, cancel: threading.Event | None = None) -> ExecutionResult:
        """Invoke with `RequestResponse` and return the function's sealed result.

        A synchronous invoke cannot be interrupted: `cancel` is accepted for the port's sake, and the
        sandbox function's own wall limit bounds how long a cancelled job keeps running.
        """
        key = integrity.new_key()
        body = self._invoke(
            self.function_for(request.limits.memory_mb), {"request": request.model_dump(mode="json"), "key": key}
        )
        sealed = integrity.open_sealed(body, key, request.job_id)  # ResultRejected when forged or malformed
        if sealed.kind == "refusal":
            reason = str(json.loads(sealed.body).get("reason", "no reason given"))
            self._remember_refusal(reason)
            raise SandboxRefused("lambda", reason)
        if sealed.kind != "result":
            raise SandboxUnavailable(f"the lambda sandbox answered a job with a sealed {sealed.kind}")
        return ExecutionResult.model_validate_json(sealed.body).model_copy(update={"sandbox": "lambda"})

    def offer(self) -> SandboxOffer:
        """What the function offers (runtimes, tools, layers, refusal), probed in it and cached for a while."""
        with self._lock:
            cached = self._offer
            if cached is not None and time.monotonic() - cached[0] < self.offer_ttl_s:
                return cached[1]
            try:
                key = integrity.new_key()
                smallest = self.function_for(SANDBOX_MEMORY_CLASSES[0] - 256)
                answer = self._invoke(smallest, {"probe": True, "key": key}, self.probe_client)
                sealed = integrity.open_sealed(answer, key, PROBE_JOB_ID)
                found = SandboxOffer.model_validate_json(sealed.body) if sealed.kind == "offer" else None
            except (PlatformFault, UnknownRuntime, ValueError) as exc:
                # Not cached for long: a throttled or cold function may answer next time.
                found = SandboxOffer(sandbox="lambda", reachable=False, refusal=f"could not be probed: {exc}")
                self._offer = (time.monotonic() - self.offer_ttl_s + 10, found)
                return found
            if found is None:
                found = SandboxOffer(sandbox="lambda", reachable=False, refusal="answered a probe with no offer")
            self._offer = (time.monotonic(), found)
            return found

    def _remember_refusal(self, reason: str) -> None:
        with self._lock:
            known = self._offer[1] if self._offer is not None else SandboxOffer(sandbox="lambda")
            self._offer = (time.monotonic(), known.model_copy(update={"refusal": reason, "source": "refused a job"}))

    def _invoke(self, function: str, payload: dict[str, Any], client: Any = None) -> bytes:
        try:
            response = (client or self.client).invoke(
                FunctionName=function,
                InvocationType="RequestResponse",
                Payload=json.dumps(payload).encode(),
            )
            body: bytes = response["Payload"].read()
        except BackendRejected as exc:
            # e.g. the function does not exist: a deployment fault, not something the job did
            raise SandboxUnavailable(f"lambda sandbox invoke refused: {exc}") from exc
        if response.get("FunctionError"):
            raise _function_error(body)
        return body


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
