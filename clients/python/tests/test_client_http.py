"""The client against httpx.MockTransport: retries, idempotency, typed errors, the wait loop, parsing."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from coderunner_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    CodeRunnerError,
    NotFoundError,
    QueueFullError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
    WaitTimeout,
)

KEY = "cr_secret-key-never-printed"
URL = "http://127.0.0.1:9"
Handler = Callable[[httpx.Request], httpx.Response]


def job(status: str = "queued", **extra: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "tier": "free", "runtime": "python3", "attempts": 0, **extra}


def error(status: int, code: str, headers: dict[str, str] | None = None, details: Any = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "details": details}}
    return httpx.Response(status, json=body, headers=headers)


class Recorder:
    """A scripted server: answers in order, records each request; sleeps are recorded, never slept."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers, self.requests, self.sleeps = list(answers), [], []  # type: list[Any], list[httpx.Request], list[float]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs: Any) -> Client:
        return Client(URL, KEY, transport=httpx.MockTransport(self.handle), sleep=self.sleeps.append, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return AsyncClient(URL, KEY, transport=httpx.MockTransport(self.handle), sleep=sleep, **kwargs)


def test_submit_retries_429_and_503_after_retry_after_with_one_idempotency_key() -> None:
    server = Recorder(
        error(429, "rate_limited", {"Retry-After": "2"}),
        error(503, "queue_full", {"Retry-After": "1"}),
        httpx.Response(202, json=job(position=3, estimated_wait_s=4.5)),
        httpx.Response(202, json=job()),
    )
    cr = server.client()
    submitted = cr.submit("print(1)", runtime="python", stdin="x", tests=[("1", "1")], limits={"wall_time_s": 2})
    assert server.sleeps == [2.0, 1.0]
    assert submitted.position == 3 and submitted.estimated_wait_s == 4.5
    keys = {r.headers["idempotency-key"] for r in server.requests[:3]}
    assert len(keys) == 1 and len(keys.pop()) == 32  # one fresh uuid for the logical submit, reused by retries
    assert json.loads(server.requests[0].content) == {
        "runtime": "python",
        "source": "print(1)",
        "stdin": "x",
        "limits": {"wall_time_s": 2},
        "tests": [{"stdin": "1", "expected_stdout": "1"}],
    }
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    cr.submit("print(2)", runtime="python")
    assert server.requests[3].headers["idempotency-key"] != server.requests[0].headers["idempotency-key"]


def test_retries_are_bounded_and_the_last_refusal_is_raised_typed() -> None:
    server = Recorder(*[error(429, "rate_limited", {"Retry-After": "1"}) for _ in range(3)])
    with pytest.raises(RateLimitError) as caught:
        server.client(retry=RetryPolicy(max_retries=2)).submit("x", runtime="bash")
    assert server.sleeps == [1.0, 1.0] and len(server.requests) == 3
    assert caught.value.retry_after == 1.0 and caught.value.code == "rate_limited" and caught.value.status == 429


def test_a_retry_after_longer_than_the_policy_allows_is_raised_at_once() -> None:
    server = Recorder(error(429, "daily_quota_exceeded", {"Retry-After": "3600"}))
    with pytest.raises(RateLimitError) as caught:
        server.client().submit("x", runtime="bash")
    assert server.sleeps == [] and caught.value.retry_after == 3600 and caught.value.code == "daily_quota_exceeded"


def test_without_retry_after_the_backoff_doubles() -> None:
    server = Recorder(
        error(503, "service_unavailable"), error(503, "service_unavailable"), httpx.Response(200, json=job())
    )
    server.client(retry=RetryPolicy(backoff_s=0.25)).get("j1")
    assert server.sleeps == [0.25, 0.5]


def test_an_unreachable_server_is_retried_then_a_transport_error() -> None:
    server = Recorder(httpx.ConnectError("refused"), httpx.Response(200, json=job("running")))
    assert server.client().get("j1").status == "running" and len(server.sleeps) == 1
    server = Recorder(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(TransportError) as caught:
        server.client().get("j1")
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (error(401, "unauthorized"), AuthenticationError, "unauthorized"),
        (error(404, "not_found"), NotFoundError, "not_found"),
        (error(422, "validation_error", details=[{"field": "runtime"}]), ValidationError, "validation_error"),
        (error(503, "queue_full", {"Retry-After": "999"}), QueueFullError, "queue_full"),
        (error(503, "service_unavailable", {"Retry-After": "999"}), ServiceUnavailableError, "service_unavailable"),
        (error(500, "internal_error"), ServerError, "internal_error"),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, "http_502"),
    ],
)
def test_errors_are_typed_with_the_house_error(answer: httpx.Response, kind: type[CodeRunnerError], code: str) -> None:
    server = Recorder(answer)
    with pytest.raises(kind) as caught:
        server.client().get("j1")
    assert caught.value.code == code and caught.value.status == answer.status_code
    assert caught.value.message
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)
    if kind is ValidationError:
        assert caught.value.details == [{"field": "runtime"}]


def test_the_key_is_never_in_the_clients_repr() -> None:
    assert KEY not in repr(Recorder().client()) and KEY not in repr(Recorder().async_client())


def test_wait_long_polls_at_most_20_s_until_terminal() -> None:
    answers = [job("queued", position=1), job("running"), job("succeeded", result={"exit_code": 0, "stdout": "hi\n"})]
    server = Recorder(*[httpx.Response(200, json=a) for a in answers])
    done = server.client().wait("j1", timeout=None)
    assert done.status == "succeeded" and done.terminal and done.result and done.result.stdout == "hi\n"
    assert [r.url.params["wait"] for r in server.requests] == ["20.0", "20.0", "20.0"]


def test_wait_gives_up_after_its_timeout_with_shorter_polls() -> None:
    now = [0.0]

    def handle(request: httpx.Request) -> httpx.Response:
        now[0] += float(request.url.params.get("wait", 0))  # the server holds the request that long
        return httpx.Response(200, json=job("running"))

    cr = Client(URL, KEY, transport=httpx.MockTransport(handle), clock=lambda: now[0])
    with pytest.raises(WaitTimeout) as caught:
        cr.wait("j1", timeout=45)
    assert caught.value.job_id == "j1" and now[0] == 45  # 20 + 20 + 5


def test_run_submits_then_waits() -> None:
    server = Recorder(httpx.Response(202, json=job()), httpx.Response(200, json=job("failed", result={"exit_code": 3})))
    done = server.client().run("exit 3", runtime="bash")
    assert done.status == "failed" and done.result and done.result.exit_code == 3
    assert [r.method for r in server.requests] == ["POST", "GET"]


def test_a_newer_server_with_unknown_fields_never_breaks_the_client() -> None:
    case = {"verdict": "wrong_answer", "stdout": "4", "index": 2, "input": "2 2", "new": {"x": 1}}
    answer = job(
        "failed",
        created_at="2026-11-23T17:50:55.740Z",
        future_field=[1, 2],
        result={
            "exit_code": 0,
            "reason": "wrong_answer",
            "gpu_ms": 3,
            "tests": {"total": 2, "accepted": 1, "cases": [case]},
        },
    )
    parsed = Recorder(httpx.Response(200, json=answer)).client().get("j1")
    assert parsed.raw["future_field"] == [1, 2]
    assert parsed.created_at is not None and parsed.created_at.year == 2026 and parsed.created_at.tzinfo is not None
    assert parsed.result and parsed.result.tests and parsed.result.tests.cases[0].verdict == "wrong_answer"
    assert parsed.result.tests.cases[0].raw["index"] == 2


def test_iter_jobs_follows_the_cursor() -> None:
    server = Recorder(
        httpx.Response(200, json={"jobs": [job(id="a"), job(id="b")], "next_cursor": "c1"}),
        httpx.Response(200, json={"jobs": [job(id="c")], "next_cursor": None}),
    )
    assert [j.id for j in server.client().iter_jobs(page_size=2)] == ["a", "b", "c"]
    assert server.requests[1].url.params["cursor"] == "c1" and server.requests[1].url.params["limit"] == "2"


def test_events_and_ack_follow_the_inbox_contract() -> None:
    event = {"id": 7, "type": "job.finished", "data": job("succeeded")}
    server = Recorder(httpx.Response(200, json={"events": [event], "dropped": 2}), httpx.Response(200, json={}))
    cr = server.client()
    batch = cr.events("laptop", wait=30)
    assert (
        batch.dropped == 2
        and batch.events[0].id == 7
        and batch.events[0].job
        and batch.events[0].job.status == "succeeded"
    )
    assert dict(server.requests[0].url.params) == {"device": "laptop", "wait": "20.0"}
    cr.ack_events("laptop", through=7)
    assert server.requests[1].method == "POST" and server.requests[1].url.path == "/v1/events/ack"
    assert json.loads(server.requests[1].content) == {"device": "laptop", "through": 7}


def test_async_client_retries_with_one_idempotency_key_and_waits() -> None:
    server = Recorder(
        error(503, "queue_full", {"Retry-After": "3"}),
        httpx.Response(202, json=job()),
        httpx.Response(200, json=job("succeeded", result={"exit_code": 0})),
    )

    async def go() -> Any:
        async with server.async_client() as cr:
            return await cr.run("print(1)", runtime="python")

    done = asyncio.run(go())
    assert done.status == "succeeded" and server.sleeps == [3.0]
    assert server.requests[0].headers["idempotency-key"] == server.requests[1].headers["idempotency-key"]


def test_async_errors_are_typed() -> None:
    server = Recorder(error(401, "unauthorized"))

    async def go() -> None:
        async with server.async_client() as cr:
            await cr.usage()

    with pytest.raises(AuthenticationError):
        asyncio.run(go())


def test_sync_and_async_clients_offer_the_same_api() -> None:
    def api(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_") and name != "close"
        }

    assert api(Client) == api(AsyncClient)
    assert {
        "run",
        "submit",
        "get",
        "wait",
        "cancel",
        "jobs",
        "usage",
        "queue",
        "runtimes",
        "events",
        "ack_events",
    } <= set(api(Client))
