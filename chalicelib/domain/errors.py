"""Errors the services raise; `app.py` maps each to one HTTP status in one place."""

from __future__ import annotations

from typing import Any


class CodeRunnerError(Exception):
    """Base of every error a client can be told about."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class BadRequest(CodeRunnerError):
    status, code = 400, "bad_request"


class Unauthorized(CodeRunnerError):
    status, code = 401, "unauthorized"


class NotFound(CodeRunnerError):
    status, code = 404, "not_found"


class Conflict(CodeRunnerError):
    status, code = 409, "conflict"


class PayloadTooLarge(CodeRunnerError):
    status, code = 413, "payload_too_large"


class ValidationFailed(CodeRunnerError):
    status, code = 422, "validation_error"


class QuotaExceeded(CodeRunnerError):
    """A per-minute, per-day or per-IP quota; `code` names which."""

    status = 429

    def __init__(self, code: str, message: str, headers: dict[str, str], details: Any = None) -> None:
        super().__init__(message, details, headers)
        self.code = code


class QueueFull(CodeRunnerError):
    status, code = 503, "queue_full"


class ServiceUnavailable(CodeRunnerError):
    """A dependency (DynamoDB, SQS) failed or throttled; nothing was consumed, the client may retry."""

    status, code = 503, "service_unavailable"


class InternalError(CodeRunnerError):
    """A bug on our side, answered as JSON like every other error."""

    status, code = 500, "internal_error"


class IllegalTransition(Exception):
    """A job state change that the state machine does not allow (a bug, never a client error)."""


class StaleState(Exception):
    """A conditional write lost a race: the job was not in the state the caller expected."""
