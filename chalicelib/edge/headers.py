"""Request headers a client controls, bounded before anything hashes, stores or echoes them.

An API key is looked up by its hash: a value that cannot be a key (too long, or a character no key has) is a
401 at once, without a read, and the message never repeats it. An `Idempotency-Key` becomes part of a DynamoDB
partition key, so it is held to what that can store (and to what a client can send back unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chalicelib.domain.errors import ValidationFailed
from chalicelib.services import keys

MAX_IDEMPOTENCY_CHARS = 255
_IDEMPOTENCY = re.compile(r"[\x20-\x7e]+")  # printable ASCII


def api_key(headers: Mapping[str, str]) -> str:
    """The plain key from `X-API-Key` or `Authorization: Bearer <key>`, bounded (services.keys.bearer, which
    the WebSocket handshake uses too); 401 naming the header otherwise."""
    return keys.bearer(headers.get("authorization"), headers.get("x-api-key"))


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The `Idempotency-Key`, if sent: 1 to 255 printable ASCII characters, else a 422 naming the header."""
    value = headers.get("idempotency-key")
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_CHARS or not _IDEMPOTENCY.fullmatch(value):
        message = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_CHARS} printable ASCII characters"
        raise ValidationFailed(message, [{"field": "Idempotency-Key", "in": "header", "message": message}])
    return value
