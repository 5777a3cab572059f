"""What the sync and async clients share: request shapes, the retry decision, answer parsing. No I/O here."""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from coderunner_client.errors import CodeRunnerError, error_for

__version__ = "0.1.0"
MAX_WAIT_S = 20.0  # the API's cap on `?wait=`
USER_AGENT = f"coderunner-client/{__version__}"

TestSpec = Mapping[str, str] | tuple[str, str]
FileSpec = Mapping[str, str] | Iterable[Mapping[str, str]]


@dataclass(frozen=True)
class RetryPolicy:
    """How 429 and 503 answers (and an unreachable server) are retried.

    The server's `Retry-After` is honoured up to `max_delay_s`; a longer one (a daily quota) is raised at once
    instead of sleeping for hours. Without the header the delay is `backoff_s`, doubling each time.
    """

    max_retries: int = 3
    max_delay_s: float = 30.0
    backoff_s: float = 0.5

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to sleep before retry number `attempt` (0-based), or None to give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is None:
            return min(self.backoff_s * 2.0**attempt, self.max_delay_s)
        return retry_after if retry_after <= self.max_delay_s else None


@dataclass(frozen=True)
class Call:
    """One API request, before it is sent (the same for the sync and async clients)."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    extra_timeout_s: float = 0.0  # a long poll holds the request this much longer


def base_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT, "Accept": "application/json"}


def submit_call(
    source: str | None,
    *,
    runtime: str | None,
    stdin: str | None,
    tests: Iterable[TestSpec] | None,
    limits: Mapping[str, float] | None,
    files: FileSpec | None,
    idempotency_key: str | None,
    fields: Mapping[str, Any],
) -> Call:
    """`POST /v1/jobs` with a fresh Idempotency-Key (unless given), which every retry of it reuses."""
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if runtime is not None:
        body["runtime"] = runtime
    if source is not None:
        body["source"] = source
    if stdin is not None:
        body["stdin"] = stdin
    if limits:
        body["limits"] = dict(limits)
    if files is not None:
        body["files"] = _files(files)
    if tests is not None:
        body["tests"] = [_test(t) for t in tests]
    return Call("POST", "/v1/jobs", body=body, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})


def _test(test: TestSpec) -> dict[str, str]:
    if isinstance(test, tuple):
        return {"stdin": test[0], "expected_stdout": test[1]}
    return dict(test)


def _files(files: FileSpec) -> list[dict[str, str]]:
    """`{"main.py": "...", ...}` or `[{"path", "content"}, ...]`; the first file is the entry point."""
    if isinstance(files, Mapping):
        return [{"path": path, "content": content} for path, content in files.items()]
    return [dict(f) for f in files]


def get_call(job_id: str, wait: float = 0.0) -> Call:
    wait = max(0.0, min(MAX_WAIT_S, wait))
    params = {"wait": f"{wait:.1f}"} if wait > 0 else {}
    return Call("GET", job_path(job_id), params=params, extra_timeout_s=wait)


def events_call(device: str, wait: float = 0.0) -> Call:
    wait = max(0.0, min(MAX_WAIT_S, wait))
    params = {"device": device, **({"wait": f"{wait:.1f}"} if wait > 0 else {})}
    return Call("GET", "/v1/events", params=params, extra_timeout_s=wait)


def jobs_call(limit: int, cursor: str | None) -> Call:
    params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
    return Call("GET", "/v1/jobs", params=params)


def job_path(job_id: str) -> str:
    if not job_id or "/" in job_id or "?" in job_id or job_id in (".", ".."):
        raise ValueError(f"not a job id: {job_id!r}")
    return f"/v1/jobs/{job_id}"


def retry_after(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(policy: RetryPolicy, attempt: int, response: httpx.Response | None) -> float | None:
    """How long to wait before sending again (None: do not), after `response` or after no answer at all."""
    if response is None:
        return policy.delay(attempt, None)
    if response.status_code not in (429, 503):
        return None
    return policy.delay(attempt, retry_after(response))


def parse(response: httpx.Response) -> Any:
    """The JSON body of a successful answer; else the typed error for it."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    if response.is_success:
        if body is None and response.content:
            raise CodeRunnerError("the API answered with something that is not JSON", status=response.status_code)
        return body
    raise error_for(response.status_code, body, retry_after(response))
