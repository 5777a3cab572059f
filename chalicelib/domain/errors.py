"""Errors, as facts. The HTTP layer (chalicelib/edge/errors.py) alone turns them into status codes and headers.

Three families:
- `CodeRunnerError`: the client's request cannot be served as sent (bad input, no key, a quota, a full queue);
  each carries what happened, never how to render it.
- `PlatformFault`: a dependency or a sandbox failed or throttled; nothing was consumed and the same request may
  succeed later (`retry_after_s`). Adapters raise these instead of botocore's errors.
- `BackendRejected`: AWS refused a request of ours as invalid. That is our bug (a value that should have been
  validated at the edge), never worth a client's retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# -- what a client sent ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaUsage:
    """Where a key stands in its two quota windows (the facts behind X-RateLimit-* and X-DailyQuota-*)."""

    minute_limit: int
    minute_remaining: int
    minute_reset: int  # epoch second
    day_limit: int
    day_remaining: int
    day_reset: int


class CodeRunnerError(Exception):
    """Base of every error a client can be told about: a stable `code`, a sentence, and structured details.
    `usage` is the caller's quota when the error answers a charged request (rate-limit headers)."""

    code = "bad_request"
    usage: QuotaUsage | None = None

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(CodeRunnerError):
    code = "bad_request"


class Unauthorized(CodeRunnerError):
    code = "unauthorized"


class Forbidden(CodeRunnerError):
    code = "forbidden"


class NotFound(CodeRunnerError):
    code = "not_found"


class Conflict(CodeRunnerError):
    code = "conflict"


class PayloadTooLarge(CodeRunnerError):
    code = "payload_too_large"


class UnsupportedMediaType(CodeRunnerError):
    """A body in a media type or charset the API does not read (it reads JSON in UTF-8)."""

    code = "unsupported_media_type"


class ValidationFailed(CodeRunnerError):
    """Invalid fields; `details` is a list of `{"field": "limits.wall_time_s", "message": ...}`."""

    code = "validation_error"


QuotaName = Literal["per_minute", "per_day", "per_ip"]
_QUOTA_CODES: dict[str, str] = {
    "per_minute": "rate_limited",
    "per_day": "daily_quota_exceeded",
    "per_ip": "ip_rate_limited",
}


class QuotaExceeded(CodeRunnerError):
    """A quota refused the request: which one, its limit, and when to come back."""

    def __init__(
        self,
        quota: QuotaName,
        limit: int,
        retry_after_s: int,
        message: str,
        usage: QuotaUsage | None = None,
        tier: str | None = None,
    ) -> None:
        details: dict[str, Any] = {"quota": quota, "limit": limit, "retry_after_s": retry_after_s}
        if tier is not None:
            details["tier"] = tier
        super().__init__(message, details)
        self.code = _QUOTA_CODES[quota]
        self.quota, self.limit, self.retry_after_s, self.usage = quota, limit, retry_after_s, usage


class QueueFull(CodeRunnerError):
    """Backpressure: the tier's queue holds its cap of jobs."""

    code = "queue_full"

    def __init__(self, tier: str, cap: int, retry_after_s: int = 5) -> None:
        super().__init__(
            f"the '{tier}' queue holds its cap of {cap} jobs; retry later", {"tier": tier, "queue_cap": cap}
        )
        self.tier, self.cap, self.retry_after_s = tier, cap, retry_after_s


# -- what the platform did ---------------------------------------------------------------------------------


class PlatformFault(Exception):
    """A dependency or sandbox could not do its part now; retrying later may work. Never the user's fault."""

    retry_after_s = 1


class DependencyThrottled(PlatformFault):
    """An AWS service throttled us (its own rate limits or capacity)."""


class DependencyUnavailable(PlatformFault):
    """An AWS service failed or could not be reached."""


class BackendRejected(Exception):
    """AWS refused one of our requests as invalid: a platform bug, logged and counted, never a retryable 503."""

    def __init__(self, service: str, code: str, message: str) -> None:
        super().__init__(f"{service} rejected a request: {code}: {message}")
        self.service, self.aws_code = service, code


# -- state machine -----------------------------------------------------------------------------------------


class IllegalTransition(Exception):
    """A job state change that the state machine does not allow (a bug, never a client error)."""


class StaleState(Exception):
    """A conditional write lost a race: the item was not in the state the caller expected."""


class AlreadyExists(Exception):
    """A create found the item there already."""
