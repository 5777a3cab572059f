"""Request headers a client controls, bounded before anything hashes, stores or echoes them.

An API key is looked up by its hash: a value that cannot be a key (too long, or a character no key has) is a
401 at once, without a read, and the message never repeats it. An `Idempotency-Key` becomes part of a DynamoDB
partition key, so it is held to what that can store (and to what a client can send back unchanged).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from chalicelib.domain.errors import Unauthorized, ValidationFailed

MAX_KEY_CHARS = 256
MAX_IDEMPOTENCY_CHARS = 255
# RFC 7235's token68: every key the platform issues is `cr_` + URL-safe base64, well inside it.
_KEY = re.compile(r"[A-Za-z0-9._~+/=-]+")
_IDEMPOTENCY = re.compile(r"[\x20-\x7e]+")  # printable ASCII


def api_key(headers: Mapping[str, str]) -> str:
    """The plain key from `X-API-Key` or `Authorization: Bearer <key>`; 401 naming the header otherwise."""
    x_api_key = headers.get("x-api-key")
    if x_api_key is not None and x_api_key.strip():
        return _key(x_api_key.strip(), "X-API-Key")
    authorization = headers.get("authorization")
    if authorization is not None and authorization.strip():
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'", {"header": "Authorization"})
        return _key(token.strip(), "Authorization")
    raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", {"header": "Authorization"})


def _key(value: str, header: str) -> str:
    if len(value) > MAX_KEY_CHARS or not _KEY.fullmatch(value):
        raise Unauthorized("the API key is not valid", {"header": header})
    return value


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The `Idempotency-Key`, if sent: 1 to 255 printable ASCII characters, else a 422 naming the header."""
    value = headers.get("idempotency-key")
    if value is None:
        return None
    if not 0 < len(value) <= MAX_IDEMPOTENCY_CHARS or not _IDEMPOTENCY.fullmatch(value):
        message = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_CHARS} printable ASCII characters"
        raise ValidationFailed(message, [{"field": "Idempotency-Key", "in": "header", "message": message}])
    return value
