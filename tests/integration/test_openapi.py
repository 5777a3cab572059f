"""The OpenAPI document (chalicelib/edge/openapi.py): it documents exactly the routes Chalice registers, it is
valid OpenAPI 3.1, and what the app really answers (chalice.test.Client on the moto server) validates against
it: every status documented for its route, every body against its schema, every required header present."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from chalice.test import Client
from openapi_spec_validator import validate

from chalicelib.edge import openapi
from tests.conformance import documented_answer, problems
from tests.integration.helpers import body, drain, new_key

JOB = {"runtime": "python", "source": "print(input()*2)", "stdin": "ab"}


@pytest.fixture
def client(stack_env: dict[str, Any]) -> Iterator[Any]:
    from app import app

    with Client(app) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def conforms(method: str, path: str, resp: Any) -> dict[str, Any]:
    """Assert that `resp` is an answer the document allows for `method path`; returns the answer's spec."""
    doc = openapi.document()
    found = problems(doc, method, path, resp.status_code, resp.headers, resp.body)
    assert found == [], found
    answer = documented_answer(doc, method, path, resp.status_code)
    assert answer is not None
    return answer


def test_every_registered_route_is_documented_and_nothing_else() -> None:
    from app import app

    registered = {(method, path) for path, entries in app.routes.items() for method in entries}
    assert registered == openapi.routes()
    handlers = {(m, p): e.view_name for p, entries in app.routes.items() for m, e in entries.items()}
    assert {(op.method.upper(), op.path): op.handler for op in openapi.ROUTES} == handlers


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the 3.1 schema
    for schema in doc["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    # the filter by status is documented with its values
    status = next(p for p in doc["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "status")
    assert "failed" in status["schema"]["enum"]


def test_the_document_is_served_without_a_key_and_rendered_at_docs(client: Any) -> None:
    resp = client.http.get("/v1/openapi.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert body(resp) == json.loads(json.dumps(openapi.document()))
    page = client.http.get("/docs")
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.body.decode()
    assert "<script" not in html and not re.findall(r'(?:src|href)="(?:https?:)?//', html)  # offline, no CDN
    for path in openapi.document()["paths"]:
        assert f"<code>{path}</code>" in html, path
    css = re.search(r'href="(static/docs\.css\?v=[0-9a-f]+)"', html)
    assert css is not None
    asset = client.http.get("/" + css.group(1))
    assert asset.status_code == 200 and asset.headers["Content-Type"] == "text/css; charset=utf-8"
    again = client.http.get("/docs", headers={"If-None-Match": page.headers["ETag"]})
    assert again.status_code == 304
    for answer, path in ((resp, "/v1/openapi.json"), (page, "/docs"), (again, "/docs"), (asset, "/static/docs.css")):
        conforms("GET", path, answer)


def test_real_answers_validate_against_the_document(client: Any) -> None:
    key = new_key()
    h = auth(key)
    submitted = client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB))
    answer = conforms("POST", "/v1/jobs", submitted)
    assert answer["headers"]["Location"]["required"] and "X-RateLimit-Limit" in submitted.headers
    job_id = body(submitted)["id"]
    graded = {
        "runtime": "python",
        "source": "import sys; sys.stdout.buffer.write(b'\\x00\\xff' + input().encode())",
        "tests": [{"stdin": "1", "expected_stdout": "1"}, {"stdin": "2", "expected_stdout": "3"}],
        "output_encoding": "base64",
    }
    graded_id = body(client.http.post("/v1/jobs", headers=h, body=json.dumps(graded)))["id"]
    conforms("GET", "/v1/jobs/x", client.http.get(f"/v1/jobs/{job_id}", headers=h))  # queued
    drain()
    for jid in (job_id, graded_id):
        done = client.http.get(f"/v1/jobs/{jid}?wait=2", headers=h)
        conforms("GET", f"/v1/jobs/{jid}", done)
        assert body(done)["status"] in ("succeeded", "failed"), body(done)
    batch = client.http.post("/v1/jobs/batch", headers=h, body=json.dumps({"jobs": [JOB, {"runtime": "cobol"}]}))
    assert batch.status_code == 207
    conforms("POST", "/v1/jobs/batch", batch)
    for path in ("/v1/jobs", "/v1/jobs?status=failed&limit=5", "/v1/usage", "/v1/queue", "/v1/runtimes", "/health"):
        resp = client.http.get(path, headers=h)
        assert resp.status_code == 200, (path, resp.body)
        conforms("GET", path, resp)
    delivery = [
        ("GET", "/v1/events?device=laptop&wait=0", None),
        ("POST", "/v1/events/ack", {"device": "laptop", "through": "evt_000000000001"}),
        ("POST", "/v1/ws-tickets", None),
        ("GET", "/v1/webhook-secret", None),
        ("POST", "/v1/webhook-secret/rotate", None),
        ("PUT", "/v1/webhook", {"url": None}),
    ]
    for method, path, payload in delivery:
        resp = client.http.request(method, path, headers=h, body=json.dumps(payload) if payload else b"")
        assert resp.status_code == 200, (method, path, resp.body)
        conforms(method, path, resp)
    queued = body(client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB)))["id"]
    conforms("DELETE", f"/v1/jobs/{queued}", client.http.delete(f"/v1/jobs/{queued}", headers=h))
    page = client.http.get("/")
    assert page.status_code == 200
    conforms("GET", "/", page)


def test_each_error_validates_against_the_document(client: Any, stack_env: dict[str, Any]) -> None:
    from chalicelib.bootstrap import get_deps

    key = new_key()
    h = auth(key)
    cases = [
        ("POST", "/v1/jobs", {"Content-Type": "application/json"}, json.dumps(JOB), 401),
        ("POST", "/v1/jobs", h, "{not json", 400),
        ("POST", "/v1/jobs", h, json.dumps({"runtime": "python", "source": ""}), 422),
        ("POST", "/v1/jobs", h, json.dumps({"runtime": "python", "source": "x" * (7 * 1024 * 1024)}), 413),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", h, None, 404),
        ("GET", "/v1/jobs?status=failure", h, None, 422),
        ("GET", "/v1/jobs?limit=0", h, None, 422),
        ("GET", "/v1/usage", {"Authorization": "Bearer cr_wrong"}, None, 401),
        ("GET", "/static/nope.js", {}, None, 404),
    ]
    for method, path, headers, payload, status in cases:
        resp = client.http.request(method, path, headers=headers, body=payload or b"")
        assert resp.status_code == status, (method, path, resp.status_code, resp.body)
        conforms(method, path, resp)
    job_id = body(client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB)))["id"]
    assert client.http.get(f"/v1/jobs/{job_id}?wait=99", headers=h).status_code == 422
    client.http.delete(f"/v1/jobs/{job_id}", headers=h)
    conflict = client.http.delete(f"/v1/jobs/{job_id}", headers=h)
    assert conflict.status_code == 409
    conforms("DELETE", f"/v1/jobs/{job_id}", conflict)
    deps = get_deps()
    deps.counters.set_tier_counts("free", deps.settings.tier("free").queue_cap, 0)  # the tier's queue is full
    full = client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB))
    assert full.status_code == 503 and body(full)["error"]["code"] == "queue_full"
    conforms("POST", "/v1/jobs", full)
    deps.counters.set_tier_counts("free", 0, 0)
    for _ in range(10):
        client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB))
    limited = client.http.post("/v1/jobs", headers=h, body=json.dumps(JOB))
    assert limited.status_code == 429
    conforms("POST", "/v1/jobs", limited)
