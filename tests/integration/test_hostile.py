"""Hostile input through the API on a moto server: the issue's examples, the last mile of the error mapping
(an AWS refusal is a logged, counted 500 with the request id, never a 503), cursors, scopes, and a job whose
output could not fit its record."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.adapters.aws import client as aws_client
from chalicelib.bootstrap import get_deps
from chalicelib.services.keys import create_key
from tests.integration.helpers import body, drain, new_key

JOB = {"runtime": "python", "source": "print(1)"}


@pytest.fixture
def client(stack_env: dict[str, Any]) -> Iterator[Any]:
    from app import app

    with Client(app) as c:
        yield c


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


def detail_fields(resp: Any) -> list[str]:
    details = body(resp)["error"]["details"]
    return [d["field"] for d in details] if isinstance(details, list) else []


# -- the three examples: clear 4xx answers that name what is wrong --------------------------------


def test_fifty_thousand_nested_brackets_are_a_400(client: Any) -> None:
    resp = client.http.post("/v1/jobs", headers=auth(new_key()), body="[" * 50_000)
    assert resp.status_code == 400, resp.body
    error = body(resp)["error"]
    assert error["code"] == "bad_request" and "deeper than 32 levels" in error["message"]


def test_a_5000_character_idempotency_key_is_a_422_naming_the_header(client: Any) -> None:
    key = new_key()
    resp = client.http.post("/v1/jobs", headers=auth(key, **{"Idempotency-Key": "k" * 5000}), body=json.dumps(JOB))
    assert resp.status_code == 422, resp.body
    assert body(resp)["error"]["details"] == [
        {
            "field": "Idempotency-Key",
            "in": "header",
            "message": "Idempotency-Key must be 1 to 255 printable ASCII characters",
        }
    ]
    assert body(client.http.get("/v1/usage", headers=auth(key)))["per_minute"]["used"] == 0


def test_a_tool_argument_that_runs_a_program_is_a_422_naming_it(client: Any) -> None:
    job = {"tool": "sort", "args": ["--compress-program=/bin/sh", "-S", "1"], "stdin": "id\n"}
    resp = client.http.post("/v1/jobs", headers=auth(new_key()), body=json.dumps(job))
    assert resp.status_code == 422, resp.body
    assert detail_fields(resp)[0] == "args.0" and "runs a program" in body(resp)["error"]["message"]


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [
        ('{"runtime": "python", "source": "x", "stdin": "\\ud800"}', 422, "stdin"),
        ('{"runtime": "python", "source": "x", "limits": {"memory_mb": 1' + "0" * 5000 + "}}", 422, "limits.memory_mb"),
        ('{"runtime": "python", "source": "x", "limits": {"wall_time_s": 1e400}}', 422, "limits.wall_time_s"),
        ('{"runtime": "python", "source": "x", "args": ["a\\u0000b"]}', 422, "args.0"),
        ('{"runtime": "python", "source": "x", "source": "y"}', 422, "source"),
    ],
    ids=["surrogate", "huge-int", "1e400", "nul-arg", "duplicate"],
)
def test_values_no_backend_can_take_are_4xx_naming_the_field(client: Any, raw: str, status: int, field: str) -> None:
    for path, payload in (("/v1/jobs", raw), ("/v1/jobs/batch", '{"jobs": [' + raw + "]}")):
        resp = client.http.post(path, headers=auth(new_key()), body=payload)
        if path.endswith("batch") and resp.status_code == 207:  # a job the batch took apart from the others
            (result,) = body(resp)["results"]
            assert result["status"] == status and result["error"]["details"][0]["field"] == field
            continue
        assert resp.status_code == status, resp.body
        assert field in detail_fields(resp) or any(field in f for f in detail_fields(resp)), resp.body


# -- the last mile of the error mapping ----------------------------------------------------------------


class _Refusal:
    status_code = 400
    headers: dict[str, str] = {}
    content = b""


def _reject_get_item(model: Any, params: dict[str, Any], **_: Any) -> Any:
    if model.name == "GetItem":
        return _Refusal(), {"Error": {"Code": "ValidationException", "Message": "injected"}, "ResponseMetadata": {}}
    return None


def test_an_aws_refusal_is_a_500_with_the_request_id_logged_and_counted(client: Any) -> None:
    """Not a 503: retrying a request AWS refused as invalid can never succeed."""
    from app import logger

    key = new_key()
    dynamodb = aws_client("dynamodb")
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    dynamodb.meta.events.register("before-call.dynamodb.GetItem", _reject_get_item)
    try:
        resp = client.http.get("/v1/usage", headers=auth(key))
    finally:
        dynamodb.meta.events.unregister("before-call.dynamodb.GetItem", _reject_get_item)
        logger.removeHandler(handler)
    assert resp.status_code == 500 and "Retry-After" not in resp.headers, resp.body
    error = body(resp)["error"]
    assert error["code"] == "internal_error" and error["details"]["request_id"]
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    (record,) = [r for r in logged if r.get("message") == "AWS rejected a request of ours"]
    assert record["request_id"] == error["details"]["request_id"] and record["level"] == "ERROR"
    assert (record["aws_service"], record["code"]) == ("dynamodb", "ValidationException") and "exception" in record
    totals = get_deps().metrics.totals  # type: ignore[union-attr]
    assert totals["BackendRejected,aws_service=dynamodb,code=ValidationException"] == 1


# -- cursors, scopes, oversized results ------------------------------------------------------------------


def test_cursors_page_on_and_refuse_edits_and_other_owners(client: Any) -> None:
    key, other = new_key(owner="acme"), new_key(owner="globex")
    ids = [body(client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(JOB)))["id"] for _ in range(3)]
    first = body(client.http.get("/v1/jobs?limit=2", headers=auth(key)))
    cursor = first["next_cursor"]
    second = body(client.http.get(f"/v1/jobs?limit=2&cursor={cursor}", headers=auth(key)))
    assert [j["id"] for j in first["jobs"] + second["jobs"]] == ids[::-1] and second["next_cursor"] is None
    edited = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for who, token in ((key, edited), (other, cursor), (key, "eyJpZCI6IDV9"), (key, "x" * 3000)):
        resp = client.http.get(f"/v1/jobs?cursor={token}", headers=auth(who))
        assert resp.status_code == 422 and detail_fields(resp) == ["cursor"], resp.body


def test_a_tool_only_key_gets_403_naming_the_scope_and_sees_its_scopes(client: Any) -> None:
    plain, _ = create_key(get_deps(), "agent-product", "free", ["tools"])
    refused = client.http.post("/v1/jobs", headers=auth(plain), body=json.dumps(JOB))
    assert refused.status_code == 403, refused.body
    error = body(refused)["error"]
    assert error["code"] == "forbidden" and error["details"] == {
        "needed": ["runtimes", "runtime:python3"],
        "scopes": ["tools"],
    }
    assert refused.headers["X-RateLimit-Remaining"] == "10"  # nothing consumed
    tool = {"tool": "wc", "args": ["-l"], "stdin": "a\nb\n"}
    assert client.http.post("/v1/jobs", headers=auth(plain), body=json.dumps(tool)).status_code == 202
    assert body(client.http.get("/v1/usage", headers=auth(plain)))["scopes"] == ["tools"]


def test_output_larger_than_a_record_holds_ends_the_job_with_its_output_cut(client: Any) -> None:
    """It used to fail the final write of every attempt (DynamoDB's 400 KB item limit), then error the job;
    large results now go to the results bucket (services/payloads.py)."""
    key = new_key()
    source = "import sys\nsys.stdout.write('a' * 2_000_000)\nsys.stderr.write('b' * 2_000_000)"
    job = {"runtime": "python", "source": source, "limits": {"output_kb": 1024, "wall_time_s": 10}}
    job_id = body(client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(job)))["id"]
    drain()
    got = body(client.http.get(f"/v1/jobs/{job_id}", headers=auth(key)))
    # The program's own end (over its output limit; on a starved machine perhaps its time), never `error`.
    assert got["status"] in ("failed", "timed_out") and got["attempts"] == 1, {k: got[k] for k in ("status", "error")}
    assert got["result"]["stdout_truncated"]


def test_answers_chalice_gives_itself_are_in_the_house_shape_without_echo(client: Any) -> None:
    key = new_key()
    odd = client.http.get("/v1/usage", headers={"Authorization": f"Bearer {key}", "Content-Type": key})
    assert odd.status_code == 415 and key.encode() not in odd.body
    assert body(odd)["error"]["code"] == "unsupported_media_type" and detail_fields(odd) == ["Content-Type"]
    xml = client.http.post("/v1/jobs", headers=auth(key, **{"Content-Type": "application/xml"}), body="<job/>")
    assert xml.status_code == 415 and body(xml)["error"]["code"] == "unsupported_media_type"
    put = client.http.put("/v1/jobs", headers=auth(key), body="{}")
    assert put.status_code == 405 and body(put)["error"]["code"] == "method_not_allowed"
    assert set(put.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
