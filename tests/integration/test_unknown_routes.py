"""Every error is the house JSON error, unknown routes and methods included, and none echoes a credential.

In the cloud the API is an HTTP API whose only routes send every request to the API function (infra/cfn/
api.json): API Gateway never answers a route or a method itself, the app's handler does (chalicelib/edge/
httpapi.py: the house 404 for an unknown path, Chalice's 405 rendered by the app's middleware). Checked here on
the packaged template; the handler itself in tests/unit/test_httpapi.py. Locally, devtools/local_gateway.py
gives the same 404 for an unknown route, and the app's middleware (chalicelib/edge/house.py) rewrites
Chalice's own refusals (405, 415)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.config import Config
from chalice.local import LocalDevServer
from chalice.test import Client

from devtools.local_gateway import HouseGateway, RouteNotFound, answer_unknown_routes, unknown_route_answer
from devtools.stack import free_port
from infra import build_template
from tests.integration.helpers import body

pytestmark = pytest.mark.xdist_group("infra")

SECRET = "cr_" + "s3cret" * 6


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(build_template.build("dev")[1]["Resources"])


def test_every_request_reaches_the_api_function(resources: dict[str, Any]) -> None:
    """No route of API Gateway's own answers (a 404 `{"message":"Not Found"}`): the `$default` route catches
    every path and method, and every route goes to the one integration, the API function's handler."""
    routes = {
        spec["Properties"]["RouteKey"]: spec["Properties"]
        for spec in resources.values()
        if spec["Type"] == "AWS::ApiGatewayV2::Route" and spec["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    }
    assert "$default" in routes
    targets = {json.dumps(route["Target"]) for route in routes.values()}
    assert targets == {json.dumps({"Fn::Join": ["/", ["integrations", {"Ref": "HttpApiIntegration"}]]})}
    integration = resources["HttpApiIntegration"]["Properties"]
    assert integration["IntegrationType"] == "AWS_PROXY" and integration["PayloadFormatVersion"] == "2.0"
    assert integration["IntegrationUri"] == {"Fn::GetAtt": ["APIHandler", "Arn"]}
    assert resources["APIHandler"]["Properties"]["Handler"] == "app.http_api"
    # No authorizer, no API key: nothing that API Gateway would refuse with its own 401/403.
    assert not any("Authoriz" in spec["Type"] for spec in resources.values())
    assert all(route.get("AuthorizationType", "NONE") == "NONE" for route in routes.values())


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
    status, headers, expected = unknown_route_answer("r1")
    assert status == 404 and json.loads(expected)["error"]["details"] == {"request_id": "r1"}
    assert headers["Content-Type"] == "application/json"


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
