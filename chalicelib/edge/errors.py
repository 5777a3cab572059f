"""The one place where errors become HTTP answers: status codes, the JSON body, and headers.

The domain says what happened (a quota, its limit, when it resets; a full queue; a throttled dependency);
only this module decides that it is a 429 with `Retry-After` and `X-RateLimit-*` headers.
"""

from __future__ import annotations

import json
from typing import Any

from chalice import Response

from chalicelib.domain.errors import (
    BadRequest,
    CodeRunnerError,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PlatformFault,
    QueueFull,
    QuotaExceeded,
    QuotaUsage,
    Unauthorized,
    ValidationFailed,
)

_STATUS: dict[type[CodeRunnerError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    ValidationFailed: 422,
    QuotaExceeded: 429,
    QueueFull: 503,
}
JSON = {"Content-Type": "application/json"}


def status_of(exc: CodeRunnerError) -> int:
    """The HTTP status for a client-facing error (400 for one this table does not know)."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return {"error": body}


def usage_headers(usage: QuotaUsage) -> dict[str, str]:
    """X-RateLimit-* (the per-minute window) and X-DailyQuota-* (the UTC day); resets are epoch seconds."""
    return {
        "X-RateLimit-Limit": str(usage.minute_limit),
        "X-RateLimit-Remaining": str(usage.minute_remaining),
        "X-RateLimit-Reset": str(usage.minute_reset),
        "X-DailyQuota-Limit": str(usage.day_limit),
        "X-DailyQuota-Remaining": str(usage.day_remaining),
        "X-DailyQuota-Reset": str(usage.day_reset),
    }


def error_headers(exc: CodeRunnerError) -> dict[str, str | list[str]]:
    headers: dict[str, str | list[str]] = dict(JSON)
    if exc.usage is not None:
        headers.update(usage_headers(exc.usage))
    if isinstance(exc, QuotaExceeded | QueueFull):
        headers["Retry-After"] = str(exc.retry_after_s)
    return headers


def error_response(exc: CodeRunnerError) -> Response:
    return Response(
        body=error_body(exc.code, exc.message, exc.details), status_code=status_of(exc), headers=error_headers(exc)
    )


def unavailable_response(exc: PlatformFault) -> Response:
    """A throttled or failing dependency: nothing was consumed, the same request may succeed shortly."""
    return Response(
        body=error_body("service_unavailable", "a dependency is unavailable; retry shortly"),
        status_code=503,
        headers={**JSON, "Retry-After": str(exc.retry_after_s)},
    )


def internal_error_response(request_id: str | None) -> Response:
    """Our bug. The request id lets an operator find the logged traceback."""
    details = {"request_id": request_id} if request_id else None
    return Response(
        body=error_body("internal_error", "internal error; the platform has logged it", details),
        status_code=500,
        headers={**JSON},
    )


def handshake_refusal(exc: CodeRunnerError) -> dict[str, Any]:
    """A refused WebSocket `$connect`, as API Gateway expects the handler's answer."""
    body = error_body(exc.code, exc.message, exc.details)
    return {"statusCode": status_of(exc), "body": json.dumps(body), "headers": {"Content-Type": "application/json"}}
