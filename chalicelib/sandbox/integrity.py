"""Sealed sandbox answers: a result the worker accepts carries a MAC the user's program could not compute.

In Lambda and Fargate the user's program runs as the same uid as the code that reports its result, and a
hole (a reachable Runtime API, a writable result URL) would let it answer for the platform: "every test
accepted". So the worker sends a fresh random key with each invocation (Lambda: in the event; Fargate: in the
task's overrides, stored for the worker beside the request). The sandbox keeps it in its own non-dumpable
memory, never in the program's environment, arguments or files, and seals its answer with it; the worker opens
the answer with the same key and accepts nothing else. A key is used once, so an old sealed answer replayed
into another invocation does not open either.

The seal covers the kind of answer, the job id and the exact JSON text of the body, so a refusal cannot pass
for a result, nor one job's result for another's. Standard library only (the sandbox image has no boto3).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Literal

from pydantic import BaseModel, ValidationError

from chalicelib.sandbox.models import ResultRejected

Kind = Literal["result", "refusal", "offer"]
KEY_BYTES = 32


class Sealed(BaseModel):
    """One answer of a sandbox: `body` is JSON text, `mac` the hex HMAC-SHA256 over kind, job id and body."""

    kind: Kind
    body: str
    mac: str


def new_key() -> str:
    """A fresh per-invocation key (hex)."""
    return secrets.token_hex(KEY_BYTES)


def _mac(key: str, kind: str, job_id: str, body: str) -> str:
    try:
        raw = bytes.fromhex(key)
    except ValueError as exc:
        raise ValueError("the sealing key is not hex") from exc
    if len(raw) < KEY_BYTES:
        raise ValueError(f"the sealing key must have at least {KEY_BYTES} bytes")
    message = b"\n".join((kind.encode(), job_id.encode(), body.encode()))
    return hmac.new(raw, message, hashlib.sha256).hexdigest()


def seal(key: str, kind: Kind, job_id: str, body: str) -> dict[str, str]:
    """The sealed answer as a JSON-ready dict."""
    return Sealed(kind=kind, body=body, mac=_mac(key, kind, job_id, body)).model_dump()


def open_sealed(raw: bytes | str | dict[str, object], key: str, job_id: str) -> Sealed:
    """The answer if its MAC holds for `key` and `job_id`; ResultRejected otherwise (malformed, forged)."""
    try:
        data = json.loads(raw) if isinstance(raw, bytes | str) else raw
        sealed = Sealed.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise ResultRejected("the sandbox's answer is not a sealed answer") from exc
    expected = _mac(key, sealed.kind, job_id, sealed.body)
    if not hmac.compare_digest(expected, sealed.mac):
        raise ResultRejected(f"the sandbox's {sealed.kind} does not carry a valid MAC for job {job_id}")
    return sealed
