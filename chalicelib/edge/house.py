"""Chalice's own error answers in the house format.

Before a handler runs, Chalice itself may refuse a request: a method the path does not have (405, locally:
API Gateway answers those in the cloud, see infra/cfn/gateway_responses.json), a content type the route does
not accept (415), or a binary answer without a matching Accept (400). It answers `{"Code", "Message"}`; the
`http` middleware in app.py passes every answer through `as_house_error`, which rewrites those (and only
those) as `{"error": {"code", "message"}}` with the same status and headers.
"""

from __future__ import annotations

from typing import Any

from chalice import Response

from chalicelib.edge.errors import error_body

# Chalice's error codes (chalice.app.error_response) and ours.
CHALICE_CODES = {
    "MethodNotAllowedError": "method_not_allowed",
    "UnsupportedMediaType": "unsupported_media_type",
    "BadRequest": "bad_request",
    "BadRequestError": "bad_request",
    "NotFoundError": "not_found",
    "InternalServerError": "internal_error",
}


def _chalice_error(body: Any) -> tuple[str, str] | None:
    if isinstance(body, dict) and set(body) == {"Code", "Message"} and body["Code"] in CHALICE_CODES:
        return CHALICE_CODES[body["Code"]], str(body["Message"])
    return None


def as_house_error(response: Response) -> Response:
    """`response` itself, unless it is one of Chalice's own errors: then the same error in the house format."""
    found = _chalice_error(response.body) if response.status_code >= 400 else None
    if found is None:
        return response
    code, message = found
    headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return Response(body=error_body(code, message), status_code=response.status_code, headers=headers)
