"""Typed errors: one class per kind of answer a caller handles differently.

Each carries the house error's `code`, `message` and `details` and the HTTP `status`. None of them ever holds
the API key: the server never echoes it, and the client never puts it in a message.
"""

from __future__ import annotations

from typing import Any


class CodeRunnerError(Exception):
    """Base of every error this client raises for an answer of the API (or for no answer at all)."""

    def __init__(self, message: str, *, code: str = "error", status: int | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class BadRequestError(CodeRunnerError):
    """400 or 413: the request itself is malformed or too large."""


class AuthenticationError(CodeRunnerError):
    """401: no key, an unknown key or a revoked key."""


class NotFoundError(CodeRunnerError):
    """404: no such job, or another caller's job."""


class ConflictError(CodeRunnerError):
    """409: cancelling a finished job, or an Idempotency-Key reused with another body."""


class ValidationError(CodeRunnerError):
    """422: invalid fields; `details` names each one."""


class RetryableError(CodeRunnerError):
    """429 or 503 still refused after the client's retries; `retry_after` is the server's last hint (seconds)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, details=details)
        self.retry_after = retry_after


class RateLimitError(RetryableError):
    """429: a per-minute, per-day or per-IP quota (`code` says which)."""


class QueueFullError(RetryableError):
    """503 `queue_full`: the tier's queue holds its cap of jobs (backpressure)."""


class ServiceUnavailableError(RetryableError):
    """503 for any other reason: a dependency throttled or failed; nothing was consumed."""


class ServerError(CodeRunnerError):
    """500 or any other unexpected answer: a bug on the server's side."""


class TransportError(CodeRunnerError):
    """The API could not be reached (refused connection, timeout, ...) after the client's retries."""


class WaitTimeout(CodeRunnerError):
    """`wait` gave up before the job reached a terminal state; the job goes on (`job_id`)."""

    def __init__(self, job_id: str, timeout: float) -> None:
        super().__init__(f"job {job_id} not finished after {timeout:g} s", code="wait_timeout")
        self.job_id = job_id
        self.timeout = timeout


_BY_STATUS: dict[int, type[CodeRunnerError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: ValidationError,
    429: RateLimitError,
}


def error_for(status: int, body: Any, retry_after: float | None = None) -> CodeRunnerError:
    """The typed error for an HTTP error answer (`body` is the parsed JSON, or whatever came)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": f"http_{status}", "message": f"unexpected HTTP {status} answer"}
    code, message, details = str(error.get("code", "error")), str(error.get("message", "")), error.get("details")
    if status == 503:
        cls: type[CodeRunnerError] = QueueFullError if code == "queue_full" else ServiceUnavailableError
    else:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else CodeRunnerError)
    if issubclass(cls, RetryableError):
        return cls(message, code=code, status=status, details=details, retry_after=retry_after)
    return cls(message, code=code, status=status, details=details)
