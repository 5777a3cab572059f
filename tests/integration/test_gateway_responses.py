"""Every error is the house JSON error, unknown routes and methods included, and none echoes a credential.

In the cloud API Gateway answers an unknown route itself (403 in its SigV4 format, echoing the caller's
`Authorization` header): infra/cfn/gateway_responses.json replaces each of its answers; checked here on the
packaged template. Locally, devtools/local_gateway.py renders the same template for an unknown route, and the
app's middleware (chalicelib/edge/house.py) rewrites Chalice's own refusals (405, 415)."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.config import Config
from chalice.local import LocalDevServer
from chalice.test import Client

from devtools.local_gateway import HouseGateway, RouteNotFound, answer_unknown_routes, gateway_response
from devtools.stack import free_port
from infra import build_template
from tests.integration.helpers import body

pytestmark = pytest.mark.xdist_group("infra")

SECRET = "cr_" + "s3cret" * 6
# The answers API Gateway gives before the app runs, and the status each must have.
EXPECTED = {
    "MISSING_AUTHENTICATION_TOKEN": 404,  # an unknown route or method (no IAM auth here: never a real 403)
    "INVALID_SIGNATURE": 404,  # the same, when the request carries an Authorization header
    "RESOURCE_NOT_FOUND": 404,
    "BAD_REQUEST_BODY": 400,
    "BAD_REQUEST_PARAMETERS": 400,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "REQUEST_TOO_LARGE": 413,
    "ACCESS_DENIED": 403,
    "WAF_FILTERED": 403,
    "THROTTLED": 429,
    "QUOTA_EXCEEDED": 429,
    "INTEGRATION_TIMEOUT": 504,
    "INTEGRATION_FAILURE": 502,
    "DEFAULT_4XX": None,  # keeps the status of whatever it answers
    "DEFAULT_5XX": None,
}


@pytest.fixture(scope="module")
def gateway_responses() -> dict[str, Any]:
    template = build_template.build("dev")[1]
    return dict(template["Resources"]["RestAPI"]["Properties"]["GatewayResponses"])


def test_every_answer_of_api_gateway_is_replaced(gateway_responses: dict[str, Any]) -> None:
    assert set(gateway_responses) == set(EXPECTED)
    for name, status in EXPECTED.items():
        assert gateway_responses[name].get("StatusCode") == (None if status is None else str(status)), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_is_the_house_json_error_and_never_echoes_the_request(
    gateway_responses: dict[str, Any], name: str
) -> None:
    spec = gateway_responses[name]
    template = spec["ResponseTemplates"]["application/json"]
    # Only $context.requestId: no header, no $input, no error message (API Gateway's echoes the key).
    assert re.findall(r"\$[\w.]+", template) == ["$context.requestId"], template
    rendered = json.loads(template.replace("$context.requestId", "c0ffee"))
    assert set(rendered) == {"error"} and set(rendered["error"]) == {"code", "message", "details"}
    assert re.fullmatch(r"[a-z_]+", rendered["error"]["code"]) and rendered["error"]["details"] == {
        "request_id": "c0ffee"
    }
    headers = spec["ResponseParameters"]["Headers"]
    assert headers["Content-Type"] == "'application/json'"
    assert all(v.startswith("'") and v.endswith("'") for v in headers.values()), "static values only"
    if EXPECTED[name] == 429:
        assert headers["Retry-After"] == "'1'"


@pytest.fixture(scope="module")
def app() -> Any:
    from app import app as chalice_app

    return chalice_app


def test_locally_an_unknown_route_is_the_same_404_and_never_echoes_the_key(app: Any) -> None:
    gateway = HouseGateway(app, Config())
    for path in ("/v2/jobs", "/v1/jobs/a/b", "/nope?x=1"):
        with pytest.raises(RouteNotFound) as refused:
            gateway.handle_request("GET", path, {"Authorization": f"Bearer {SECRET}"}, None)
        assert refused.value.CODE == 404 and SECRET.encode() not in (refused.value.body or b"")
        error = json.loads(refused.value.body or b"")["error"]
        assert error["code"] == "not_found" and error["message"] == "no route matches this method and path"
    status, _, expected = gateway_response("MISSING_AUTHENTICATION_TOKEN", "r1")
    assert status == 404 and json.loads(expected)["error"]["code"] == "not_found"


@pytest.fixture
def client(stack_env: dict[str, Any], app: Any) -> Iterator[Any]:
    with Client(app) as c:
        yield c


def test_an_unknown_method_or_content_type_is_the_house_error(client: Any) -> None:
    headers = {"Authorization": f"Bearer {SECRET}"}
    put = client.http.put("/v1/jobs", headers=headers, body=b"{}")
    assert put.status_code == 405 and body(put)["error"]["code"] == "method_not_allowed", put.body
    assert set(put.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    xml = client.http.post("/v1/jobs", headers={**headers, "Content-Type": "application/xml"}, body=b"<x/>")
    assert xml.status_code == 415 and body(xml)["error"]["code"] == "unsupported_media_type", xml.body
    for resp in (put, xml):
        assert SECRET.encode() not in resp.body and resp.headers["Content-Type"] == "application/json"


def test_the_local_server_answers_unknown_routes_and_methods_as_house_errors(
    stack_env: dict[str, Any], app: Any
) -> None:
    """Over HTTP, as `make dev` serves the app: Chalice's local server with answer_unknown_routes (not built by
    create_local_server, which would change the class of the app other tests share)."""
    server = LocalDevServer(app, Config(), "127.0.0.1", free_port())
    answer_unknown_routes(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for method, path, status, code in (
            ("GET", "/v2/nothing", 404, "not_found"),
            ("TRACE", "/v1/jobs", 405, "method_not_allowed"),  # the standard library would answer HTML 501
            ("DELETE", "/v1/usage", 405, "method_not_allowed"),
        ):
            request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
            request.add_header("Authorization", f"Bearer {SECRET}")
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(request, timeout=10)
            raw = answer.value.read()
            assert answer.value.code == status and SECRET.encode() not in raw, (method, path, raw)
            assert answer.value.headers["Content-Type"] == "application/json"
            assert json.loads(raw)["error"]["code"] == code
    finally:
        server.shutdown()
        thread.join(timeout=10)
