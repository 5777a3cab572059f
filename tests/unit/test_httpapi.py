"""The deployed API's handler (app.http_api): API Gateway HTTP API events (payload format 2.0, in the shape of
the developer guide's example) served by the real Chalice app on in-memory fakes, and the answers in the 2.0
response shape (chalicelib/edge/httpapi.py)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib import bootstrap
from chalicelib.edge.httpapi import match_route, to_http_response, to_rest_event

JOB = {"runtime": "python", "source": "print(1)"}
SECRET_SHAPED = "cr_" + "s3cret" * 6


def http_event(
    method: str,
    path: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    body: str | None = None,
    base64_body: bool = False,
    cookies: list[str] | None = None,
) -> dict[str, Any]:
    """An HTTP API 2.0 event as API Gateway sends it for the `$default` route and stage."""
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "agent", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "agent",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "12/Mar/2020:19:03:58 +0000",
            "timeEpoch": 1583348638390,
        },
        "isBase64Encoded": base64_body,
    }
    if body is not None:
        event["body"] = body
    if query:  # 2.0 joins a repeated parameter's values with commas here; the adapter reads rawQueryString
        joined: dict[str, list[str]] = {}
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            joined.setdefault(name, []).append(value)
        event["queryStringParameters"] = {k: ",".join(v) for k, v in joined.items()}
    if cookies:
        event["cookies"] = cookies
    return event


@pytest.fixture
def serve(deps: Any) -> Iterator[Any]:
    """Calls app.http_api as Lambda would, with the app wired to the fakes; returns the 2.0 answer."""
    import app

    saved = bootstrap._deps
    bootstrap._deps = deps
    try:
        yield lambda event: app.http_api(event, None)
    finally:
        bootstrap._deps = saved


def body_of(answer: dict[str, Any]) -> Any:
    raw = base64.b64decode(answer["body"]) if answer["isBase64Encoded"] else answer["body"]
    return json.loads(raw)


def test_a_submit_then_a_get_by_its_path_parameter(serve: Any, key: str) -> None:
    auth = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    submitted = serve(http_event("POST", "/v1/jobs", headers=auth, body=json.dumps(JOB)))
    assert submitted["statusCode"] == 202, submitted
    assert set(submitted) == {"statusCode", "headers", "body", "isBase64Encoded"}
    job_id = body_of(submitted)["id"]
    assert submitted["headers"]["Location"] == f"/v1/jobs/{job_id}"

    fetched = serve(http_event("GET", f"/v1/jobs/{job_id}", headers=auth))
    assert fetched["statusCode"] == 200 and body_of(fetched)["id"] == job_id


def test_a_base64_body_and_header_names_in_any_case(serve: Any, key: str) -> None:
    """API Gateway sends lower-case names (and base64 for a body it takes as binary); either way the app reads
    the key and the JSON."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    encoded = base64.b64encode(json.dumps(JOB).encode()).decode()
    answer = serve(http_event("POST", "/v1/jobs", headers=headers, body=encoded, base64_body=True))
    assert answer["statusCode"] == 202, answer
    assert body_of(answer)["status"] == "queued"


def test_query_parameters_keep_every_value_of_a_repeated_one(serve: Any, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    listed = serve(http_event("GET", "/v1/jobs", query="limit=1&status=queued", headers=auth))
    assert listed["statusCode"] == 200, listed
    # Read from rawQueryString, not the comma-joined queryStringParameters: "give it once", not a bad value.
    twice = serve(http_event("GET", "/v1/jobs", query="limit=1&limit=2", headers=auth))
    error = body_of(twice)["error"]
    assert twice["statusCode"] == 422 and error["message"] == "limit: give it once" and "limit" in json.dumps(error), (
        twice
    )


def test_an_unknown_path_is_the_house_404_and_never_echoes_the_request(serve: Any) -> None:
    for path in ("/v2/jobs", "/v1/jobs/a/b", "/v1//jobs", "/api/v1/jobs"):
        event = http_event("GET", path, query=f"key={SECRET_SHAPED}", headers={"authorization": SECRET_SHAPED})
        answer = serve(event)
        assert answer["statusCode"] == 404, (path, answer)
        assert SECRET_SHAPED not in json.dumps(answer) and path not in answer["body"]
        error = body_of(answer)["error"]
        assert error["code"] == "not_found" and error["details"] == {"request_id": "JKJaXmPLvHcESHA="}
        assert answer["headers"]["Content-Type"] == "application/json"


def test_a_known_path_with_another_method_is_the_house_405(serve: Any) -> None:
    answer = serve(http_event("PUT", "/v1/jobs", headers={"authorization": f"Bearer {SECRET_SHAPED}"}, body="{}"))
    assert answer["statusCode"] == 405 and body_of(answer)["error"]["code"] == "method_not_allowed", answer
    assert set(answer["headers"]["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert SECRET_SHAPED not in json.dumps(answer)


def test_the_playground_at_the_root_of_the_default_stage(serve: Any) -> None:
    answer = serve(http_event("GET", "/"))
    assert answer["statusCode"] == 200 and answer["headers"]["Content-Type"].startswith("text/html"), answer


def test_routing_prefers_a_literal_segment_and_ignores_a_trailing_slash() -> None:
    patterns = ["/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/batch", "/"]
    assert match_route(patterns, "/v1/jobs/batch").resource_path == "/v1/jobs/batch"  # type: ignore[union-attr]
    found = match_route(patterns, "/v1/jobs/j-1/")
    assert found is not None and found.resource_path == "/v1/jobs/{job_id}" and found.params == {"job_id": "j-1"}
    assert match_route(patterns, "/").resource_path == "/"  # type: ignore[union-attr]
    assert match_route(patterns, "") is not None and match_route(patterns, "/v1") is None


def test_the_rest_event_carries_what_chalice_and_the_app_read() -> None:
    match = match_route(["/v1/jobs/{job_id}"], "/v1/jobs/j-1")
    assert match is not None
    event = to_rest_event(http_event("GET", "/v1/jobs/j-1", query="wait=5&x=a%20b&flag", cookies=["a=1", "b=2"]), match)
    context = event["requestContext"]
    assert (context["resourcePath"], context["httpMethod"], context["path"]) == (
        "/v1/jobs/{job_id}",
        "GET",
        "/v1/jobs/j-1",
    )
    assert context["identity"]["sourceIp"] == "203.0.113.7" and context["requestId"] == "JKJaXmPLvHcESHA="
    assert event["pathParameters"] == {"job_id": "j-1"}
    assert event["multiValueQueryStringParameters"] == {"wait": ["5"], "x": ["a b"], "flag": [""]}
    assert event["headers"]["cookie"] == "a=1; b=2" and event["body"] is None
    bare = to_rest_event(http_event("GET", "/v1/jobs/j-1"), match)
    assert bare["multiValueQueryStringParameters"] is None and bare["queryStringParameters"] is None


def test_the_answer_in_the_2_0_shape() -> None:
    answer = to_http_response(
        {
            "statusCode": 201,
            "headers": {"Content-Type": "application/json"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "Vary": ["Accept", "Origin"]},
            "body": "{}",
        }
    )
    assert answer == {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "Vary": "Accept,Origin"},
        "cookies": ["a=1", "b=2"],
        "body": "{}",
        "isBase64Encoded": False,
    }
    binary = to_http_response({"statusCode": 200, "headers": {}, "body": "AAE=", "isBase64Encoded": True})
    assert binary["isBase64Encoded"] is True and binary["body"] == "AAE="
