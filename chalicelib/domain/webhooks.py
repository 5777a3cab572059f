"""Webhooks per the Standard Webhooks specification: secrets, signatures, the retry schedule, outcomes.

Signature: `v1,` + base64(HMAC-SHA256(secret, f"{webhook-id}.{webhook-timestamp}.{body}")), the secret being
the base64 part of `whsec_<base64>`. During a rotation's 24 h overlap every attempt is signed with both
secrets and the header holds both signatures (space separated); a receiver accepts either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel

SECRET_PREFIX = "whsec_"
ROTATION_OVERLAP_S = 24 * 3600  # the previous secret still signs (and so verifies) this long after a rotation
# About 5 attempts over an hour: the first at once, then after these waits (61 min in all). SQS delays a
# message by at most 900 s, so a longer wait is made of several hops (see services/webhooks.py).
BACKOFF_S = (60, 300, 900, 2400)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
SQS_MAX_DELAY_S = 900
TIMEOUT_S = 5.0  # connect and each read of one attempt
MAX_RESPONSE_BYTES = 4096  # the receiver's answer is never read past this


class WebhookState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(BaseModel):
    """A job's webhook delivery as `GET /v1/jobs/{id}` shows it."""

    state: WebhookState
    attempts: int = 0
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    error: str | None = None  # why it failed or was not attempted


@dataclass(frozen=True)
class WebhookConfig:
    """A key's webhook settings: its default URL, its secrets, and the URLs a receiver disabled (410)."""

    key_id: str
    url: str | None = None
    secret: str | None = None
    previous_secret: str | None = None
    previous_until: float = 0.0
    disabled: frozenset[str] = field(default_factory=frozenset)

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets an attempt at `now` is signed with: the current one, and the previous one during the
        overlap after a rotation."""
        out = [self.secret] if self.secret else []
        if self.previous_secret and now < self.previous_until:
            out.append(self.previous_secret)
        return out


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One `v1,<base64>` signature of `{id}.{timestamp}.{body}` with a `whsec_` secret."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: list[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed afresh: its own timestamp)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
    }


class Outcome(StrEnum):
    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver asks us to stop; the URL is disabled for the key
    RETRY = "retry"  # anything else (no answer, 3xx, 4xx, 5xx) while attempts remain
    FAILED = "failed"  # the last attempt failed


def outcome(status: int | None, attempt: int) -> Outcome:
    """What attempt number `attempt` (1-based) answering `status` means. Redirects are failures: they are
    never followed (a redirect could point anywhere, past the address checks)."""
    if status is not None and 200 <= status < 300:
        return Outcome.DELIVERED
    if status == 410:
        return Outcome.GONE
    return Outcome.RETRY if attempt < MAX_ATTEMPTS else Outcome.FAILED


def wait_after(attempt: int) -> int:
    """Seconds to wait after failed attempt number `attempt` (1-based) before the next one."""
    return BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]


def hop(remaining_s: float) -> int:
    """The SQS delay of the next hop towards a wait of `remaining_s` (SQS delays at most 900 s)."""
    return max(0, min(SQS_MAX_DELAY_S, int(remaining_s + 0.999)))
