"""The deployed API is an API Gateway HTTP API (payload format 2.0); Chalice's app speaks REST API proxy events.

The HTTP API sends every request to one `$default` route (and `POST /v1/jobs`, a route of its own only for its
latency metrics), so the routing a REST API did is done here: the path is matched against the app's routes
(`app.routes`, patterns with `{params}`), and the request becomes the REST proxy event `Chalice.__call__`
expects (`requestContext.resourcePath`, `pathParameters`, multi-value query, ...). A path no route matches
gets the house 404 here, before the app (as the REST API's gateway response gave it); a known path with
another method reaches Chalice, whose 405 the app's middleware renders in the house format. The answer goes
back in the 2.0 response shape (`cookies` for `Set-Cookie`, other repeated headers joined by commas).

Format facts relied on (API Gateway developer guide, "Lambda proxy integrations for HTTP APIs"): header names
are lower case and repeated headers are joined with commas; `cookies` holds the Cookie header's parts;
`rawPath` is the path without the `$default` stage (and already percent-decoded: it is not decoded again);
`rawQueryString` is the query as sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from chalicelib.edge.errors import error_body

Event = Mapping[str, Any]
# What the app's responses carry on every house error (chalicelib/edge/errors.py JSON, plus the two the
# REST API's gateway responses set).
NOT_FOUND_HEADERS = {
    "Content-Type": "application/json",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
NOT_FOUND_MESSAGE = "no route matches this method and path"


@dataclass(frozen=True)
class Match:
    """The app's route pattern a path matched, and the path's values of its `{params}`."""

    resource_path: str
    params: dict[str, str]


def _segments(path: str) -> list[str]:
    inner = path.strip("/")
    return inner.split("/") if inner else []


def match_route(patterns: list[str], path: str) -> Match | None:
    """The route pattern `path` falls under (a literal segment beats a `{param}` at the same place, as in API
    Gateway's REST API), or None. A trailing slash is ignored; a parameter matches one non-empty segment."""
    wanted = _segments(path)
    best: tuple[tuple[bool, ...], Match] | None = None
    for pattern in patterns:
        parts = _segments(pattern)
        if len(parts) != len(wanted):
            continue
        params: dict[str, str] = {}
        for part, value in zip(parts, wanted, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not value:
                    break
                params[part[1:-1]] = value
            elif part != value:
                break
        else:
            rank = tuple(not (p.startswith("{") and p.endswith("}")) for p in parts)  # literals first, leftmost
            if best is None or rank > best[0]:
                best = (rank, Match(pattern, params))
    return None if best is None else best[1]


def _query(raw: str) -> dict[str, list[str]] | None:
    """`rawQueryString` as REST's multiValueQueryStringParameters (None when there is none)."""
    out: dict[str, list[str]] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        out.setdefault(name, []).append(value)
    return out or None


def _headers(event: Event) -> dict[str, str]:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    cookies = event.get("cookies")
    if cookies:  # 2.0 moves the Cookie header's parts out of `headers`
        headers["cookie"] = "; ".join(cookies)
    return headers


def to_rest_event(event: Event, match: Match) -> dict[str, Any]:
    """The REST API proxy event for an HTTP API 2.0 `event` whose path matched `match`."""
    context = event.get("requestContext") or {}
    http = context.get("http") or {}
    method = str(http.get("method") or "GET").upper()
    path = event.get("rawPath") or http.get("path") or "/"
    headers = _headers(event)
    query = _query(event.get("rawQueryString") or "")
    return {
        "resource": match.resource_path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None if query is None else {k: v[-1] for k, v in query.items()},
        "multiValueQueryStringParameters": query,
        "pathParameters": match.params or None,
        "stageVariables": event.get("stageVariables"),
        "body": event.get("body"),
        "isBase64Encoded": bool(event.get("isBase64Encoded", False)),
        "requestContext": {
            "resourcePath": match.resource_path,
            "httpMethod": method,
            "path": path,
            "requestId": context.get("requestId"),
            "stage": context.get("stage"),
            "apiId": context.get("apiId"),
            "accountId": context.get("accountId"),
            "domainName": context.get("domainName"),
            "protocol": http.get("protocol"),
            "requestTime": context.get("time"),
            "requestTimeEpoch": context.get("timeEpoch"),
            "identity": {"sourceIp": http.get("sourceIp"), "userAgent": http.get("userAgent")},
        },
    }


def to_http_response(response: Mapping[str, Any]) -> dict[str, Any]:
    """A REST proxy answer (Chalice's `Response.to_dict`) in the 2.0 response shape."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    multi = dict(response.get("multiValueHeaders") or {})
    for name, value in (response.get("headers") or {}).items():
        multi.setdefault(name, [value])
    for name, values in multi.items():
        if name.lower() == "set-cookie":
            cookies.extend(str(v) for v in values)
        else:
            headers[name] = ",".join(str(v) for v in values)
    out: dict[str, Any] = {
        "statusCode": int(response.get("statusCode", 200)),
        "headers": headers,
        "body": response.get("body") or "",
        "isBase64Encoded": bool(response.get("isBase64Encoded", False)),
    }
    if cookies:
        out["cookies"] = cookies
    return out


def not_found(request_id: str | None) -> dict[str, Any]:
    """The house 404 for a path no route matches (never repeating the request: no path, no header)."""
    details = {"request_id": request_id} if request_id else None
    body = json.dumps(error_body("not_found", NOT_FOUND_MESSAGE, details), separators=(",", ":"))
    return {"statusCode": 404, "headers": dict(NOT_FOUND_HEADERS), "body": body, "isBase64Encoded": False}


def handle(
    app: Callable[[dict[str, Any], Any], Mapping[str, Any]], routes: Mapping[str, Any], event: Event, context: Any
) -> dict[str, Any]:
    """Serve one HTTP API 2.0 `event` with the Chalice `app` (its `routes`): the 2.0 answer."""
    path = event.get("rawPath") or ((event.get("requestContext") or {}).get("http") or {}).get("path") or "/"
    match = match_route(list(routes), path)
    if match is None:
        return not_found((event.get("requestContext") or {}).get("requestId"))
    return to_http_response(app(to_rest_event(event, match), context))
