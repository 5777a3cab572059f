"""The OpenAPI 3.1 document of the HTTP API, built from the pydantic models that validate requests
(`domain/requests.py`) and shape answers (`domain/views.py`), plus the route table below.

A route of app.py is documented here by one `Operation`: its method and path, parameters, request body and
every answer it can give (status, model, headers). `tests/integration/test_openapi.py` checks that this table
and the routes Chalice registers are the same set, that the document is valid OpenAPI 3.1, and that real
answers validate against it; `make fuzz` sends it generated requests (schemathesis).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib.domain.events import EventsView
from chalicelib.domain.jobs import JobStatus
from chalicelib.domain.requests import AckRequest, BatchRequest, SubmitRequest, WebhookUrlRequest
from chalicelib.domain.views import (
    AckView,
    BatchView,
    ErrorView,
    HealthView,
    JobsPage,
    JobView,
    QueueView,
    RuntimesView,
    TicketView,
    UsageView,
    WebhookSecretView,
    WebhookUrlView,
)

TITLE = "code-runner"
VERSION = "1"
REF = "#/components/schemas/{model}"
MAX_WAIT_S = 20  # GET /v1/jobs/{job_id}?wait (services/queries.py MAX_WAIT_S)

# -- headers -----------------------------------------------------------------------------------------------
_INT = {"type": "integer"}
HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
    "X-RateLimit-Limit": {"description": "submits allowed per minute", "schema": _INT},
    "X-RateLimit-Remaining": {"description": "submits left this minute", "schema": _INT},
    "X-RateLimit-Reset": {"description": "epoch second when the minute window resets", "schema": _INT},
    "X-DailyQuota-Limit": {"description": "submits allowed per UTC day", "schema": _INT},
    "X-DailyQuota-Remaining": {"description": "submits left today", "schema": _INT},
    "X-DailyQuota-Reset": {"description": "epoch second when the UTC day ends", "schema": _INT},
    "Location": {"description": "the job's URL", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when an Idempotency-Key replayed an earlier submit",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "ETag": {"description": "the content's hash", "schema": {"type": "string"}},
    "Cache-Control": {"description": "how long the content may be cached", "schema": {"type": "string"}},
}
QUOTA_HEADERS = tuple(h for h in HEADERS if h.startswith(("X-RateLimit", "X-DailyQuota")))


@dataclass(frozen=True)
class Answer:
    """One documented response: a model (JSON), or another content type; headers always or sometimes sent."""

    description: str
    model: type[BaseModel] | None = None
    content_type: str | None = None  # non-JSON content (HTML, CSS...)
    headers: tuple[str, ...] = ()
    required_headers: tuple[str, ...] = ()


def _error(description: str, *, headers: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> Answer:
    return Answer(description, ErrorView, headers=headers, required_headers=required)


# Errors by status, as chalicelib/edge/errors.py renders them.
BAD_REQUEST = _error("`bad_request`: the body is not JSON")
UNAUTHORIZED = _error("`unauthorized`: no key, an unknown key or a revoked key")
NOT_FOUND = _error("`not_found`: no such job, or another caller's")
CONFLICT = _error("`conflict`: the job is already finished, or an Idempotency-Key was used with another body")
TOO_LARGE = _error("`payload_too_large`: the body is over 6 MB")
INVALID = _error("`validation_error`: `details` names each field (`field`) and says why (`message`)")
THROTTLED = _error(
    "`rate_limited` or `daily_quota_exceeded` (the key's quotas, on submits), or `ip_rate_limited` "
    "(too many requests from one IP)",
    headers=("Retry-After", *QUOTA_HEADERS),
    required=("Retry-After",),
)
UNAVAILABLE = _error(
    "`queue_full` (backpressure: the tier's queue holds its cap) or `service_unavailable` (a dependency "
    "throttled or failed; nothing was consumed)",
    headers=("Retry-After", *QUOTA_HEADERS),
    required=("Retry-After",),
)
UNSUPPORTED = _error(
    "`unsupported_media_type`: a Content-Type the route does not take (Chalice checks it on every route; "
    "send JSON, or no body)"
)
# What every route behind the per-IP guard that reads a table can answer.
GUARDED = {429: THROTTLED, 503: UNAVAILABLE}
AUTHED = {401: UNAUTHORIZED, **GUARDED}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path | query | header
    schema: dict[str, Any]
    description: str
    required: bool = False


JOB_ID = Param(
    "job_id", "path", {"type": "string", "minLength": 1, "maxLength": 128}, "the job's id (from the submit)", True
)
DEVICE = Param(
    "device",
    "query",
    {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
    "the device whose inbox to read (case-insensitive)",
    True,
)
IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 255},
    "the same key and body return the same job (no second charge); another body with it is 409",
)


@dataclass(frozen=True)
class Operation:
    """One route of app.py as the document shows it (`handler`: the Chalice view function's name)."""

    method: str
    path: str
    handler: str
    summary: str
    tag: str
    answers: dict[int, Answer]
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_example: dict[str, Any] | None = None
    authenticated: bool = True
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


JOB_EXAMPLE = {"runtime": "python", "source": "print(input()*2)", "stdin": "ab", "limits": {"wall_time_s": 2}}
SUBMITTED = Answer(
    "accepted: the job is queued (`position`, `estimated_wait_s`)",
    JobView,
    headers=("Location", "Idempotent-Replayed", *QUOTA_HEADERS),
    required_headers=("Location",),
)

ROUTES: tuple[Operation, ...] = (
    Operation(
        "post",
        "/v1/jobs",
        "submit_job",
        "Submit a job",
        "jobs",
        {202: SUBMITTED, 400: BAD_REQUEST, 409: CONFLICT, 413: TOO_LARGE, 422: INVALID, **AUTHED},
        params=(IDEMPOTENCY_KEY,),
        body=SubmitRequest,
        body_example=JOB_EXAMPLE,
        description="A runtime with `source` (or `files`), or a registered `tool` with `args`. A refused submit "
        "consumes nothing. The rate-limit headers come with every charged answer.",
    ),
    Operation(
        "post",
        "/v1/jobs/batch",
        "submit_batch",
        "Submit up to 20 jobs",
        "jobs",
        {
            202: Answer("every job was accepted", BatchView),
            207: Answer("some jobs were refused: each result has its own status and error", BatchView),
            400: BAD_REQUEST,
            413: TOO_LARGE,
            422: INVALID,
            **AUTHED,
        },
        body=BatchRequest,
        body_example={"jobs": [JOB_EXAMPLE, {"tool": "wc", "args": ["-l"], "stdin": "a\nb\n"}]},
    ),
    Operation(
        "get",
        "/v1/jobs/{job_id}",
        "get_job",
        "A job, waiting for it to finish",
        "jobs",
        {200: Answer("the job", JobView), 404: NOT_FOUND, 422: INVALID, **AUTHED},
        params=(
            JOB_ID,
            Param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                f"seconds (at most {MAX_WAIT_S}) to wait for a terminal state (long-poll)",
            ),
        ),
    ),
    Operation(
        "delete",
        "/v1/jobs/{job_id}",
        "cancel_job",
        "Cancel a job",
        "jobs",
        {200: Answer("the cancelled job", JobView), 404: NOT_FOUND, 409: CONFLICT, **AUTHED},
        params=(JOB_ID,),
        description="A queued job is skipped when its message arrives, a running one is stopped; a finished "
        "job is 409.",
    ),
    Operation(
        "get",
        "/v1/jobs",
        "list_jobs",
        "Your jobs, newest first",
        "jobs",
        {200: Answer("a page of jobs; `next_cursor` pages on", JobsPage), 422: INVALID, **AUTHED},
        params=(
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}, "page size"),
            Param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous page"),
            Param(
                "status",
                "query",
                {"type": "string", "enum": [s.value for s in JobStatus]},
                "only jobs in this status (a page may then hold fewer than `limit` jobs: follow `next_cursor`)",
            ),
        ),
    ),
    Operation(
        "get",
        "/v1/usage",
        "usage",
        "Your limits and what is left",
        "account",
        {200: Answer("each limit, used, remaining and reset time", UsageView), **AUTHED},
    ),
    Operation(
        "get",
        "/v1/queue",
        "queue",
        "Queue depth and estimated wait per tier",
        "account",
        {200: Answer("per tier: queued, running, capacity, queue cap, estimated wait", QueueView), **AUTHED},
    ),
    Operation(
        "get",
        "/v1/runtimes",
        "runtimes",
        "Runtimes and registered tools",
        "catalog",
        {200: Answer("runtimes and tools with version, availability and default limits", RuntimesView), 429: THROTTLED},
        authenticated=False,
    ),
    Operation(
        "get",
        "/v1/events",
        "read_events",
        "A device's waiting events (long-poll)",
        "delivery",
        {200: Answer("the device's events, oldest first (at most 50)", EventsView), 422: INVALID, **AUTHED},
        params=(
            DEVICE,
            Param(
                "wait",
                "query",
                {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                f"seconds (at most {MAX_WAIT_S}) to wait for an event when there is none",
            ),
        ),
        description="Reading does not remove: acknowledge with POST /v1/events/ack.",
    ),
    Operation(
        "post",
        "/v1/events/ack",
        "ack_events",
        "Acknowledge a device's events",
        "delivery",
        {200: Answer("how many were removed", AckView), 400: BAD_REQUEST, 413: TOO_LARGE, 422: INVALID, **AUTHED},
        body=AckRequest,
        body_example={"device": "laptop", "through": "evt_000000000042"},
    ),
    Operation(
        "post",
        "/v1/ws-tickets",
        "ws_ticket",
        "A ticket for a browser's WebSocket connect",
        "delivery",
        {200: Answer("a single-use ticket, valid one minute", TicketView), **AUTHED},
    ),
    Operation(
        "get",
        "/v1/webhook-secret",
        "webhook_secret",
        "The key's webhook signing secret",
        "delivery",
        {200: Answer("the secret (Standard Webhooks, whsec_...)", WebhookSecretView), **AUTHED},
    ),
    Operation(
        "post",
        "/v1/webhook-secret/rotate",
        "rotate_webhook_secret",
        "Rotate the webhook signing secret",
        "delivery",
        {200: Answer("the new secret; the previous one keeps signing 24 h", WebhookSecretView), **AUTHED},
    ),
    Operation(
        "put",
        "/v1/webhook",
        "set_webhook",
        "Set the key's default webhook URL",
        "delivery",
        {200: Answer("the URL now set", WebhookUrlView), 400: BAD_REQUEST, 413: TOO_LARGE, 422: INVALID, **AUTHED},
        body=WebhookUrlRequest,
        body_example={"url": "https://example.com/hooks/code-runner"},
    ),
    Operation(
        "get",
        "/health",
        "health",
        "Liveness",
        "meta",
        {200: Answer("the API answers", HealthView)},
        authenticated=False,
    ),
    Operation(
        "get",
        "/v1/openapi.json",
        "openapi_document",
        "This document",
        "meta",
        {200: Answer("the OpenAPI 3.1 document", content_type="application/json"), 429: THROTTLED},
        authenticated=False,
    ),
    Operation(
        "get",
        "/docs",
        "api_docs",
        "This document as a web page",
        "meta",
        {
            200: Answer("HTML", content_type="text/html", headers=("ETag", "Cache-Control")),
            304: Answer("not modified (If-None-Match)"),
            429: THROTTLED,
        },
        authenticated=False,
    ),
    Operation(
        "get",
        "/",
        "playground",
        "The web playground",
        "meta",
        {
            200: Answer("HTML", content_type="text/html", headers=("ETag", "Cache-Control")),
            304: Answer("not modified (If-None-Match)"),
            308: Answer("to the same path with a trailing slash", headers=("Location",)),
            429: THROTTLED,
        },
        authenticated=False,
    ),
    Operation(
        "get",
        "/static/{name}",
        "static_file",
        "A page's asset (CSS, JS, SVG)",
        "meta",
        {
            200: Answer("the asset", content_type="*/*", headers=("ETag", "Cache-Control")),
            304: Answer("not modified (If-None-Match)"),
            404: _error("`not_found`: no such asset"),
            429: THROTTLED,
        },
        params=(
            Param("name", "path", {"type": "string", "minLength": 1}, "the asset's file name", True),
            Param("v", "query", {"type": "string"}, "the asset's content hash (cached for good when current)"),
        ),
        authenticated=False,
    ),
)

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the same key, another header"},
}


def _schemas() -> dict[str, Any]:
    """Every model's JSON Schema (2020-12, which OpenAPI 3.1 uses) under one set of names."""
    models: list[tuple[type[BaseModel], Any]] = [(op.body, "validation") for op in ROUTES if op.body is not None]
    models += [
        (answer.model, "serialization") for op in ROUTES for answer in op.answers.values() if answer.model is not None
    ]
    _, schemas = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    defs: dict[str, Any] = schemas.get("$defs", {})
    # A batch's jobs are validated one by one after the batch (each may be refused alone): document them as jobs.
    defs["BatchRequest"]["properties"]["jobs"]["items"] = {"$ref": REF.format(model="SubmitRequest")}
    return defs


def _response(answer: Answer) -> dict[str, Any]:
    out: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        out["content"] = {"application/json": {"schema": {"$ref": REF.format(model=answer.model.__name__)}}}
    elif answer.content_type is not None:
        out["content"] = {answer.content_type: {"schema": {"type": "string"}}}
    if answer.headers:
        out["headers"] = {
            name: {**HEADERS[name], "required": name in answer.required_headers} for name in answer.headers
        }
    return out


def _operation(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": op.handler, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    if op.params:
        out["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.required, "description": p.description, "schema": p.schema}
            for p in op.params
        ]
    if op.body is not None:
        media: dict[str, Any] = {"schema": {"$ref": REF.format(model=op.body.__name__)}}
        if op.body_example is not None:
            media["example"] = op.body_example
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    answers = {415: UNSUPPORTED, **op.answers}  # Chalice refuses an unlisted Content-Type on every route
    out["responses"] = {str(status): _response(answer) for status, answer in sorted(answers.items())}
    out["security"] = [{"bearer": []}, {"apiKey": []}] if op.authenticated else []
    return out


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per process; treat it as read-only)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in ROUTES:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "summary": "Run untrusted code: submit a job, poll its result.",
            "description": 'Every error is `{"error": {"code", "message", "details"}}`. Keys go in '
            "`Authorization: Bearer <key>` or `X-API-Key`.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": SECURITY_SCHEMES},
    }


def routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every documented route."""
    return {(op.method.upper(), op.path) for op in ROUTES}
