"""The HTTP API through chalice.test.Client, against DynamoDB and SQS on a moto server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.bootstrap import get_deps
from tests.integration.helpers import body, drain, new_key

JOB = {"runtime": "python", "source": "print(input()*2)", "stdin": "ab"}


@pytest.fixture
def client(stack_env: dict[str, Any]) -> Any:
    from app import app

    with Client(app) as c:
        yield c


def auth(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **extra}


def post(client: Any, key: str, payload: Any, **headers: str) -> Any:
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    return client.http.post("/v1/jobs", headers=auth(key, **headers), body=raw)


def test_submit_run_and_fetch_a_job(client: Any) -> None:
    key = new_key()
    resp = post(client, key, JOB)
    assert resp.status_code == 202, resp.body
    job = body(resp)
    assert job["status"] == "queued" and job["position"] == 0 and job["estimated_wait_s"] is not None
    assert resp.headers["X-RateLimit-Limit"] == "10" and resp.headers["X-RateLimit-Remaining"] == "9"
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"
    drain()
    got = body(client.http.get(f"/v1/jobs/{job['id']}?wait=2", headers=auth(key)))
    assert got["status"] == "succeeded", got
    assert got["result"]["stdout"] == "abab\n" and got["result"]["exit_code"] == 0
    assert got["attempts"] == 1 and got["queue_wait_ms"] >= 0 and got["finished_at"]


@pytest.mark.parametrize(
    ("source", "status", "reason"),
    [
        ("import sys; print('boom', file=sys.stderr); sys.exit(3)", "failed", "exit_code"),
        ("while True: pass", "timed_out", None),
    ],
)
def test_failures_and_timeouts(client: Any, source: str, status: str, reason: str | None) -> None:
    key = new_key()
    job = body(post(client, key, {"runtime": "python", "source": source, "limits": {"wall_time_s": 1}}))
    drain()
    got = body(client.http.get(f"/v1/jobs/{job['id']}", headers=auth(key)))
    assert got["status"] == status, got
    if reason:
        assert got["result"]["reason"] == reason and got["result"]["exit_code"] == 3
        assert "boom" in got["result"]["stderr"]
    else:
        assert got["result"]["reason"] in ("wall_time", "cpu_time")


def test_errors_are_json_with_codes(client: Any) -> None:
    key = new_key()
    no_key = client.http.post("/v1/jobs", headers={"Content-Type": "application/json"}, body=json.dumps(JOB))
    assert no_key.status_code == 401 and body(no_key)["error"]["code"] == "unauthorized"
    bad_key = post(client, "cr_wrong", JOB)
    assert bad_key.status_code == 401
    malformed = post(client, key, "{not json")
    assert malformed.status_code == 400 and body(malformed)["error"]["code"] == "bad_request"
    invalid = post(client, key, {"runtime": "python", "source": "x", "limits": {"wall_time_s": 99}})
    assert invalid.status_code == 422
    assert body(invalid)["error"]["details"][0]["field"] == "limits.wall_time_s"
    unknown = client.http.get("/v1/jobs/does-not-exist", headers=auth(key))
    assert unknown.status_code == 404 and body(unknown)["error"]["code"] == "not_found"
    bad_wait = client.http.get(f"/v1/jobs/{'0' * 32}?wait=99", headers=auth(key))
    assert bad_wait.status_code == 422 and body(bad_wait)["error"]["details"][0]["field"] == "wait"


def test_form_encoded_curl_body_is_accepted(client: Any) -> None:
    """`curl -d` sends application/x-www-form-urlencoded; the README's example must work as written."""
    key = new_key()
    resp = client.http.post(
        "/v1/jobs",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"},
        body=json.dumps(JOB),
    )
    assert resp.status_code == 202, resp.body


def test_another_callers_job_is_404(client: Any) -> None:
    mine = body(post(client, new_key(owner="acme"), JOB))
    other = new_key(owner="globex")
    assert client.http.get(f"/v1/jobs/{mine['id']}", headers=auth(other)).status_code == 404
    assert client.http.delete(f"/v1/jobs/{mine['id']}", headers=auth(other)).status_code == 404


def test_cancel_then_409(client: Any) -> None:
    key = new_key()
    job = body(post(client, key, JOB))
    resp = client.http.delete(f"/v1/jobs/{job['id']}", headers=auth(key))
    assert resp.status_code == 200 and body(resp)["status"] == "cancelled"
    assert client.http.delete(f"/v1/jobs/{job['id']}", headers=auth(key)).status_code == 409
    drain()  # the message arrives and is skipped
    assert body(client.http.get(f"/v1/jobs/{job['id']}", headers=auth(key)))["result"] is None


def test_listing_filters_by_status_and_refuses_an_unknown_one(client: Any) -> None:
    key = new_key()
    ids = [body(post(client, key, JOB))["id"] for _ in range(3)]
    assert client.http.delete(f"/v1/jobs/{ids[1]}", headers=auth(key)).status_code == 200
    cancelled = body(client.http.get("/v1/jobs?status=cancelled", headers=auth(key)))
    assert [j["id"] for j in cancelled["jobs"]] == [ids[1]] and cancelled["next_cursor"] is None
    queued = body(client.http.get("/v1/jobs?status=queued&limit=1", headers=auth(key)))
    assert [j["id"] for j in queued["jobs"]] == [ids[2]]
    rest = body(client.http.get(f"/v1/jobs?status=queued&cursor={queued['next_cursor']}", headers=auth(key)))
    assert [j["id"] for j in rest["jobs"]] == [ids[0]]
    bad = client.http.get("/v1/jobs?status=failure", headers=auth(key))
    assert bad.status_code == 422, bad.body
    assert body(bad)["error"]["details"][0]["field"] == "status"


class StartOfMinuteClock:
    """The real clock, set back when made to one second into its minute: a test's next minute of calls falls
    in one per-minute window, without waiting for a minute to begin."""

    def __init__(self) -> None:
        self.behind = time.time() % 60 - 1

    def now(self) -> float:
        return time.time() - self.behind


def test_list_usage_runtimes_queue(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The three submits and the usage read must fall in one per-minute window.
    monkeypatch.setattr(get_deps(), "clock", StartOfMinuteClock())
    key = new_key()
    ids = [body(post(client, key, JOB))["id"] for _ in range(3)]
    listed = body(client.http.get("/v1/jobs?limit=2", headers=auth(key)))
    assert [j["id"] for j in listed["jobs"]] == ids[::-1][:2] and listed["next_cursor"]
    more = body(client.http.get(f"/v1/jobs?limit=2&cursor={listed['next_cursor']}", headers=auth(key)))
    assert [j["id"] for j in more["jobs"]] == [ids[0]]
    usage = body(client.http.get("/v1/usage", headers=auth(key)))
    assert usage["per_minute"] == {**usage["per_minute"], "limit": 10, "used": 3, "remaining": 7}
    assert usage["per_day"]["used"] == 3 and usage["tier"] == "free"
    queue = body(client.http.get("/v1/queue", headers=auth(key)))
    assert queue["tiers"]["free"]["queued"] == 3
    runtimes = body(client.http.get("/v1/runtimes", headers=auth(key)))
    names = {r["name"] for r in runtimes["runtimes"]}
    assert {"python3", "node", "bash"} <= names
    assert client.http.get("/health").status_code == 200


def test_idempotency_key(client: Any) -> None:
    key = new_key()
    first = post(client, key, JOB, **{"Idempotency-Key": "k-1"})
    again = post(client, key, JOB, **{"Idempotency-Key": "k-1"})
    assert body(first)["id"] == body(again)["id"] and again.headers.get("Idempotent-Replayed") == "true"
    other = post(client, key, {**JOB, "stdin": "zz"}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert body(client.http.get("/v1/usage", headers=auth(key)))["per_minute"]["used"] == 1


def test_batch_accepts_and_rejects_each_on_its_own(client: Any) -> None:
    key = new_key()
    jobs = [JOB, {"runtime": "cobol", "source": "x"}, JOB]
    resp = client.http.post("/v1/jobs/batch", headers=auth(key), body=json.dumps({"jobs": jobs}))
    out = body(resp)
    assert [r["status"] for r in out["results"]] == [202, 422, 202]
    assert out["accepted"] == 2 and out["rejected"] == 1
    too_many = client.http.post("/v1/jobs/batch", headers=auth(key), body=json.dumps({"jobs": [JOB] * 21}))
    assert too_many.status_code == 422


def test_quota_429_headers_and_nothing_consumed(client: Any) -> None:
    key = new_key()
    for _ in range(10):
        assert post(client, key, JOB).status_code == 202
    refused = post(client, key, JOB)
    assert refused.status_code == 429
    err = body(refused)["error"]
    assert err["code"] == "rate_limited" and err["details"]["limit"] == 10
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    usage = body(client.http.get("/v1/usage", headers=auth(key)))
    assert usage["per_minute"]["used"] == 10 and usage["per_day"]["used"] == 10


@pytest.mark.parametrize(
    ("job", "field", "names"),
    [
        ({"tool": "sort", "args": ["--compress-program=/bin/sh", "-S", "1"]}, "args.0", "'--compress-program'"),
        ({"tool": "sort", "args": ["-n", "-o", "/tmp/x"]}, "args.1", "'-o'"),
        ({"tool": "wc", "args": ["--files0-from=/etc/passwd"]}, "args.0", "'--files0-from'"),
        ({"tool": "sort", "args": ["--compress=/bin/sh"]}, "args.0", "abbreviation of '--compress-program'"),
        ({"tool": "base64", "args": ["-d", "--", "/etc/passwd"]}, "args.2", "operand"),
    ],
)
def test_tool_args_outside_the_grammar_are_a_422_naming_the_argument(
    client: Any, job: dict[str, Any], field: str, names: str
) -> None:
    key = new_key()
    resp = post(client, key, {**job, "stdin": "echo pwned\n"})
    assert resp.status_code == 422, resp.body
    error = body(resp)["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["field"] == field and names in error["details"][0]["message"], error
    assert body(client.http.get("/v1/usage", headers=auth(key)))["per_minute"]["used"] == 0  # nothing consumed


def test_tool_jobs_run_their_allowed_args_and_runtimes_lists_them(client: Any) -> None:
    key = new_key()
    job = body(post(client, key, {"tool": "sort", "args": ["-t,", "-k2,2n"], "stdin": "a,10\nb,9\n"}))
    drain()
    got = body(client.http.get(f"/v1/jobs/{job['id']}?wait=2", headers=auth(key)))
    assert got["status"] == "succeeded" and got["result"]["stdout"] == "b,9\na,10\n", got
    tools = {t["name"]: t for t in body(client.http.get("/v1/runtimes", headers=auth(key)))["tools"]}
    assert {"-k", "--key"} <= {s for a in tools["sort"]["arguments"] for s in a["spellings"]}
    assert [a["spellings"] for a in tools["base64"]["arguments"]] == [
        ["-d", "--decode"],
        ["-i", "--ignore-garbage"],
        ["-w", "--wrap"],
    ]


def test_base64_output_is_the_bytes_the_program_wrote(client: Any) -> None:
    key = new_key()
    source = "import sys; sys.stdout.buffer.write(bytes([0, 255, 10]))"
    job = body(post(client, key, {"runtime": "python", "source": source, "output_encoding": "base64"}))
    drain()
    got = body(client.http.get(f"/v1/jobs/{job['id']}", headers=auth(key)))
    assert got["status"] == "succeeded", got
    assert got["result"]["encoding"] == "base64" and got["result"]["stdout"] == "AP8K"  # was AO+/vQo=


def test_a_failed_grading_says_why_and_shows_each_case_next_to_what_it_ran(client: Any) -> None:
    key = new_key()
    tests = [{"stdin": "1 2", "expected_stdout": "3"}, {"stdin": "2 2", "expected_stdout": "5"}]
    tests.append({"stdin": "1 1\n" + "#" * 2000, "expected_stdout": "2"})
    source = "a, b = map(int, input().split())\nprint(a + b)"
    job = body(post(client, key, {"runtime": "python", "source": source, "tests": tests}))
    drain()
    result = body(client.http.get(f"/v1/jobs/{job['id']}", headers=auth(key)))["result"]
    assert result["reason"] == "wrong_answer" and result["verdict"] == "wrong_answer", result  # was null
    cases = result["tests"]["cases"]
    assert [c["index"] for c in cases] == [1, 2, 3]
    assert [c["verdict"] for c in cases] == ["accepted", "wrong_answer", "accepted"]
    assert (cases[1]["stdin"], cases[1]["expected_stdout"], cases[1]["stdout"]) == ("2 2", "5", "4\n")
    assert cases[2]["stdin_truncated"] and len(cases[2]["stdin"]) == 1024 and not cases[1]["stdin_truncated"]
