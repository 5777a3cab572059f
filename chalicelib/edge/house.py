"""Chalice's own error answers in the house format.

Before a handler runs, Chalice itself may refuse a request: a method the path does not have (405; in the cloud
too, since the HTTP API sends every request to the app: chalicelib/edge/httpapi.py), a content type the route does
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


# Chalice's messages for these repeat what the client sent ("Unsupported media type: <the header>").
_OWN_WORDS: dict[str, tuple[str, Any]] = {
    "unsupported_media_type": (
        "this route takes JSON: send 'Content-Type: application/json' (or none)",
        [{"field": "Content-Type", "in": "header", "message": "not a media type this route takes"}],
    ),
    "internal_error": ("internal error; the platform has logged it", None),
}


def is_chalice_error(response: Response) -> bool:
    """Whether `response` is one of Chalice's own error answers."""
    return response.status_code >= 400 and _chalice_error(response.body) is not None


def as_house_error(response: Response, request_id: str | None = None) -> Response:
    """`response` itself, unless it is one of Chalice's own errors: then the same error in the house format,
    never repeating the request (a 500 carries the request id, like ours)."""
    found = _chalice_error(response.body) if response.status_code >= 400 else None
    if found is None:
        return response
    code, message = found
    details: Any = None
    if code in _OWN_WORDS:
        message, details = _OWN_WORDS[code]
    if code == "internal_error" and request_id:
        details = {"request_id": request_id}
    headers = {**(response.headers or {}), "Content-Type": "application/json"}
    return Response(body=error_body(code, message, details), status_code=response.status_code, headers=headers)
