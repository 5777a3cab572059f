"""Path and query parameters: checked against exactly what the platform issues or accepts, before any read.

Unknown query parameters are ignored (caches and browsers add their own, e.g. `_=1700000000`); a known one
given twice is a 422, since which copy counts would otherwise depend on the gateway. No message repeats
the value the client sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.errors import NotFound, ValidationFailed
from chalicelib.domain.jobs import JobStatus
from chalicelib.services.queries import MAX_WAIT_S

MAX_PAGE = 100
DEFAULT_PAGE = 20
_JOB_ID = re.compile(r"[0-9a-f]{32}")  # services.deps.new_job_id: 12 hex digits of milliseconds + 20 random
_SECONDS = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,9})?(?:[eE][+-]?[0-9]{1,3})?")  # a plain number: no nan, inf, 1_0
_COUNT = re.compile(r"[0-9]{1,3}")


def job_id(raw: str) -> str:
    """A job id as the platform issues them; anything else is 404 at once (no id of that shape exists)."""
    if not _JOB_ID.fullmatch(raw):
        raise NotFound("no such job")
    return raw


def invalid(name: str, message: str) -> ValidationFailed:
    """A 422 naming query parameter `name`."""
    return ValidationFailed(f"{name}: {message}", [{"field": name, "in": "query", "message": message}])


def one(query: Mapping[str, Any] | None, name: str) -> str | None:
    """The single value of query parameter `name` (None when absent or empty)."""
    if not query or name not in query:
        return None
    getlist = getattr(query, "getlist", None)
    values = list(getlist(name)) if getlist is not None else [query[name]]
    if len(values) > 1:
        raise invalid(name, "give it once")
    return values[0] or None


def wait(query: Mapping[str, Any] | None) -> float:
    """`?wait=N`: seconds to long-poll, 0 to 20."""
    raw = one(query, "wait")
    if raw is None:
        return 0.0
    if not _SECONDS.fullmatch(raw) or not 0 <= float(raw) <= MAX_WAIT_S:
        raise invalid("wait", f"a number of seconds from 0 to {MAX_WAIT_S:g}")
    return float(raw)


def limit(query: Mapping[str, Any] | None) -> int:
    """`?limit=N`: page size, 1 to 100 (default 20)."""
    raw = one(query, "limit")
    if raw is None:
        return DEFAULT_PAGE
    if not _COUNT.fullmatch(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid("limit", f"an integer from 1 to {MAX_PAGE}")
    return int(raw)


def status(query: Mapping[str, Any] | None) -> JobStatus | None:
    """`?status=`: one of the job statuses, or absent (every status)."""
    raw = one(query, "status")
    if raw is None:
        return None
    try:
        return JobStatus(raw)
    except ValueError as exc:
        raise invalid("status", f"one of {', '.join(s.value for s in JobStatus)}") from exc
