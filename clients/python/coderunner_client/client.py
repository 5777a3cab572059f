"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Self

import httpx

from coderunner_client import _core
from coderunner_client._core import Call, FileSpec, RetryPolicy, TestSpec
from coderunner_client.errors import TransportError, WaitTimeout
from coderunner_client.models import EventBatch, Job, JobPage, QueueStatus, Runtimes, Usage


class Client:
    """code-runner over HTTP: `Client(url, key).run("print(1)", runtime="python")`.

    429 and 503 answers are retried as `retry` says (honouring `Retry-After`); errors are typed
    (`coderunner_client.errors`). `transport`, `sleep` and `clock` are for tests.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep, self._clock = sleep, clock
        self._http = httpx.Client(
            base_url=self.url, headers=_core.base_headers(key), timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:  # never the key
        return f"Client({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.body,
                    headers=call.headers,
                    timeout=self.timeout + call.extra_timeout_s,
                )
            except httpx.TransportError as exc:
                if (delay := _core.retry_delay(self.retry, attempt, None)) is None:
                    raise TransportError(f"cannot reach {self.url}: {type(exc).__name__}") from exc
            else:
                if (delay := _core.retry_delay(self.retry, attempt, response)) is None:
                    return _core.parse(response)
            self._sleep(delay)
            attempt += 1

    def submit(
        self,
        source: str | None = None,
        *,
        runtime: str | None = None,
        stdin: str | None = None,
        tests: Iterable[TestSpec] | None = None,
        limits: Mapping[str, float] | None = None,
        files: FileSpec | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Job:
        """Submit a job (202: queued, with its position and estimated wait). Other API fields (`tool`,
        `args`, `sandbox`, `output_encoding`, ...) pass through `fields`."""
        call = _core.submit_call(
            source,
            runtime=runtime,
            stdin=stdin,
            tests=tests,
            limits=limits,
            files=files,
            idempotency_key=idempotency_key,
            fields=fields,
        )
        return Job.from_api(self._send(call))

    def get(self, job_id: str, wait: float = 0.0) -> Job:
        """The job; with `wait` (<= 20 s), the server holds the answer until the job is terminal."""
        return Job.from_api(self._send(_core.get_call(job_id, wait)))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Long-poll until the job is terminal; `WaitTimeout` after `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            left = _core.MAX_WAIT_S if deadline is None else deadline - self._clock()
            job = self.get(job_id, wait=min(_core.MAX_WAIT_S, max(0.0, left)))
            if job.terminal:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise WaitTimeout(job_id, timeout or 0.0)

    def run(
        self,
        source: str | None = None,
        *,
        runtime: str | None = None,
        stdin: str | None = None,
        tests: Iterable[TestSpec] | None = None,
        limits: Mapping[str, float] | None = None,
        files: FileSpec | None = None,
        timeout: float | None = 300.0,
        **fields: Any,
    ) -> Job:
        """Submit and wait: the finished job (`WaitTimeout` if it is not done after `timeout` seconds)."""
        job = self.submit(source, runtime=runtime, stdin=stdin, tests=tests, limits=limits, files=files, **fields)
        return job if job.terminal else self.wait(job.id, timeout)

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued or running job (`ConflictError` if it already finished)."""
        return Job.from_api(self._send(Call("DELETE", _core.job_path(job_id))))

    def jobs(self, limit: int = 20, cursor: str | None = None) -> JobPage:
        """One page of the caller's jobs, newest first."""
        return JobPage.from_api(self._send(_core.jobs_call(limit, cursor)))

    def iter_jobs(self, page_size: int = 50) -> Iterator[Job]:
        """Every job of the caller, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = self.jobs(page_size, cursor)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def usage(self) -> Usage:
        return Usage.from_api(self._send(Call("GET", "/v1/usage")))

    def queue(self) -> QueueStatus:
        return QueueStatus.from_api(self._send(Call("GET", "/v1/queue")))

    def runtimes(self) -> Runtimes:
        return Runtimes.from_api(self._send(Call("GET", "/v1/runtimes")))

    def events(self, device: str, wait: float = 0.0) -> EventBatch:
        """The device's offline inbox, in order; with `wait` (<= 20 s), hold until an event arrives."""
        return EventBatch.from_api(self._send(_core.events_call(device, wait)))

    def ack_events(self, device: str, through: int | str) -> dict[str, Any]:
        """Acknowledge the device's events up to and including `through`: they are not sent again."""
        answer = self._send(Call("POST", "/v1/events/ack", body={"device": device, "through": through}))
        return dict(answer or {})
