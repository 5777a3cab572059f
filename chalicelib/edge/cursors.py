"""Page cursors the API issues: the store's own cursor, sealed with an HMAC bound to the caller.

A client gets `<store cursor, base64url>.<tag>` and must send it back unchanged: a cursor that was edited,
forged, or issued to another owner is a 422 naming `cursor`, and never reaches the store (whose page keys
DynamoDB would refuse). The key is `CODERUNNER_CURSOR_SECRET`; without one it is derived from the stage name,
which keeps cursors working across instances but lets someone who knows the stage forge one: stores still
accept only well-formed cursors of the caller's own jobs (see JobStore.list_by_owner), so a forged cursor can
at worst skip through the forger's own jobs. Set the secret in the cloud.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from chalicelib.config import APP_NAME, Settings
from chalicelib.edge.params import invalid

MAX_CURSOR_CHARS = 2048
_TAG_BYTES = 16
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def _secret(settings: Settings) -> bytes:
    given = settings.cursor_secret.get_secret_value()
    return given.encode() if given else hashlib.sha256(f"{APP_NAME}:{settings.stage}:cursors".encode()).digest()


def _tag(settings: Settings, owner: str, inner: bytes) -> bytes:
    message = b"cursor\x00" + owner.encode() + b"\x00" + inner
    return hmac.new(_secret(settings), message, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def seal(settings: Settings, owner: str, inner: str | None) -> str | None:
    """The cursor a client sees for the store's cursor `inner` (None stays None: the last page)."""
    if inner is None:
        return None
    data = inner.encode()
    return f"{_b64(data)}.{_b64(_tag(settings, owner, data))}"


def unseal(settings: Settings, owner: str, token: str | None) -> str | None:
    """The store's cursor inside a cursor this API issued to `owner`; 422 naming `cursor` for anything else."""
    if token is None:
        return None
    if len(token) > MAX_CURSOR_CHARS or not _TOKEN.fullmatch(token):
        raise invalid("cursor", "not a cursor this API issued: send `next_cursor` back unchanged")
    body, _, tag = token.partition(".")
    try:
        data, given = _unb64(body), _unb64(tag)
        inner = data.decode()
    except (binascii.Error, ValueError) as exc:
        raise invalid("cursor", "not a cursor this API issued: send `next_cursor` back unchanged") from exc
    if _b64(data) != body or _b64(given) != tag:  # one spelling only: no edited padding bits pass
        raise invalid("cursor", "not a cursor this API issued: send `next_cursor` back unchanged")
    if not hmac.compare_digest(given, _tag(settings, owner, data)):
        raise invalid("cursor", "not a cursor this API issued to this key's owner")
    return inner
