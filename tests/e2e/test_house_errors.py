"""On the running stack (`make dev`'s API process): an unknown route or method is the house JSON error, as the
deployed API's handler makes it in the cloud (chalicelib/edge/httpapi.py), and never echoes the caller's key."""

from __future__ import annotations

import pytest

from tests.e2e.stackproc import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/jobs", 404, "not_found"),
        ("POST", "/v1/nothing/here", 404, "not_found"),
        ("PATCH", "/v1/jobs", 405, "method_not_allowed"),
        ("TRACE", "/v1/usage", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_and_methods(stack: StackProcess, method: str, path: str, status: int, code: str) -> None:
    key = stack.keys["free"]
    resp = stack.api(key).call(method, path)
    assert resp.status == status and resp.error_code == code, (resp.status, resp.body)
    assert resp.headers["content-type"] == "application/json"
    assert key not in str(resp.body) and key not in str(resp.headers)
