"""code-runner's Chalice app: thin handlers that parse, call one service, and map the result."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Rate, Response
from chalice.app import Request

from chalicelib.bootstrap import get_deps
from chalicelib.deployment import APP_NAME, TIER_NAMES, worker_capacity
from chalicelib.domain.errors import (
    BackendRejected,
    BadRequest,
    CodeRunnerError,
    PlatformFault,
    Unauthorized,
    ValidationFailed,
)
from chalicelib.edge import house, httpapi
from chalicelib.edge.errors import (
    error_response,
    handshake_refusal,
    internal_error_response,
    status_of,
    unavailable_response,
    usage_headers,
)
from chalicelib.metric_names import BACKEND_REJECTED, UNHANDLED_ERRORS
from chalicelib.services.ipguard import IpGuard
from chalicelib.tier_resources import missing_functions, tier_resources


class _OnFirstUse:
    """A module imported when a handler first uses it: every function (API, workers, cleanup, sandbox) imports
    this file, and each cold start should pay only for what its own handler runs."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)  # thread-safe; a second import is a lookup
        return getattr(self._module, attr)


class _PowertoolsLogger:
    """Powertools' Logger, built when a handler first logs (its import is a good part of a cold start).

    It then lends its JSON handler and level to every top-level logger registered by then, `chalicelib`
    among them (registered below): our modules log through their `chalicelib.*` children, including the ones
    imported on first use, after this copy.
    """

    def __init__(self) -> None:
        self._logger: Logger | None = None
        self._lock = threading.Lock()  # built once, even when the first requests come at once (local stack)

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            with self._lock:
                if self._logger is None:
                    self._logger = self._build()
        return getattr(self._logger, attr)

    @staticmethod
    def _build() -> Logger:
        from aws_lambda_powertools import Logger
        from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

        built = Logger(service=APP_NAME)
        copy_config_to_registered_loggers(source_logger=built)
        return built


if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from chalicelib import config, web
    from chalicelib.domain import inbox as inbox_domain
    from chalicelib.domain import views
    from chalicelib.edge import body as bodies
    from chalicelib.edge import cursors, openapi, params
    from chalicelib.edge import headers as request_headers
    from chalicelib.services import batch as batches
    from chalicelib.services import catalog, channel, inbox, keys, lifecycle, queries, reaper, submit, webhooks
    from chalicelib.services.ports import ApiKey
    from chalicelib.web import docs
else:
    config = _OnFirstUse("chalicelib.config")  # the settings (pydantic): read when a handler first needs them
    web = _OnFirstUse("chalicelib.web")
    inbox_domain = _OnFirstUse("chalicelib.domain.inbox")
    views = _OnFirstUse("chalicelib.domain.views")
    openapi = _OnFirstUse("chalicelib.edge.openapi")
    bodies = _OnFirstUse("chalicelib.edge.body")
    cursors = _OnFirstUse("chalicelib.edge.cursors")
    params = _OnFirstUse("chalicelib.edge.params")
    request_headers = _OnFirstUse("chalicelib.edge.headers")
    docs = _OnFirstUse("chalicelib.web.docs")
    batches = _OnFirstUse("chalicelib.services.batch")
    catalog = _OnFirstUse("chalicelib.services.catalog")
    channel = _OnFirstUse("chalicelib.services.channel")
    inbox = _OnFirstUse("chalicelib.services.inbox")
    keys = _OnFirstUse("chalicelib.services.keys")
    lifecycle = _OnFirstUse("chalicelib.services.lifecycle")
    queries = _OnFirstUse("chalicelib.services.queries")
    reaper = _OnFirstUse("chalicelib.services.reaper")
    submit = _OnFirstUse("chalicelib.services.submit")
    webhooks = _OnFirstUse("chalicelib.services.webhooks")

app = Chalice(app_name=APP_NAME, configure_logs=False)  # Powertools owns the "code-runner" logger
app.experimental_feature_flags.update(["WEBSOCKETS"])
logging.getLogger("chalicelib")  # registered now: the Logger's configuration reaches all of our modules
logger = _PowertoolsLogger()

# Queue names are needed when the app is imported (by `chalice package` too), so the stage comes from the
# environment with the same default as the settings.
STAGE = os.environ.get("CODERUNNER_STAGE", "dev")
# Chalice answers a media type outside a route's list itself, in its own error shape and echoing the header:
# routes take any type, and chalicelib/edge/body.py refuses the ones the API does not read (415, house JSON).
BODY_TYPES = ["*/*"]
_guard: IpGuard | None = None


def _capacity(tier: str) -> int:
    """The settings' `capacity(tier)`, without importing them for the usual environment (see deployment.py)."""
    known = worker_capacity(tier)
    return known if known is not None else config.get_settings().capacity(tier)


def ip_guard() -> IpGuard:
    global _guard
    if _guard is None:
        _guard = IpGuard(config.get_settings().ip_per_minute)
    return _guard


def _request() -> Request:
    """The request being served (Chalice types it Optional; inside a route it is always set)."""
    request = app.current_request
    assert request is not None
    return request


def _source_ip() -> str:
    context = _request().context or {}
    return str(context.get("identity", {}).get("sourceIp") or "unknown")


def _request_id() -> str | None:
    """API Gateway's request id (the client sees it too); the Lambda request id where there is no gateway."""
    given = (_request().context or {}).get("requestId")
    return given or getattr(app.lambda_context, "aws_request_id", None)


def api(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Per-IP guard, request logging context, path parameters checked before any read, and the one place
    where exceptions become HTTP answers."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ip = _source_ip()
        logger.append_keys(request_id=_request_id(), job_id=None)
        try:
            ip_guard().charge(ip)
            if "job_id" in kwargs:
                kwargs["job_id"] = params.job_id(kwargs["job_id"])
                logger.append_keys(job_id=kwargs["job_id"])
            return handler(*args, **kwargs)
        except Unauthorized as exc:
            ip_guard().failed_auth(ip)
            return error_response(exc)
        except CodeRunnerError as exc:
            return error_response(exc)
        except PlatformFault as exc:
            # Throttled or unreachable: the services gave back whatever they had taken.
            logger.warning("dependency unavailable", extra={"error": str(exc)})
            get_deps().metric("DependencyUnavailable", route=handler.__name__)
            return unavailable_response(exc)
        except BackendRejected as exc:
            # `aws_service`: the logger's and Powertools' own `service` names this app.
            logger.exception("AWS rejected a request of ours", extra={"aws_service": exc.service, "code": exc.aws_code})
            get_deps().metric(BACKEND_REJECTED, aws_service=exc.service, code=exc.aws_code)
            return internal_error_response(_request_id())
        except Exception:
            logger.exception("unhandled error")
            get_deps().metric(UNHANDLED_ERRORS, route=handler.__name__)
            return internal_error_response(_request_id())
        finally:
            get_deps().flush_metrics()  # the request's metrics, as one EMF line

    return wrapper


def _flushing(handler: Callable[..., Any]) -> Callable[..., Any]:
    """An event handler whose metrics go out as one EMF line when it ends."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        finally:
            get_deps().flush_metrics()

    return wrapper


def _json_body() -> Any:
    """The body's JSON, bounded and checked by the edge (chalicelib/edge/body.py): never a parser's error."""
    request = _request()
    bodies.check_media_type(request.headers.get("content-type"))
    try:
        raw = request.raw_body or b""
        data = raw if isinstance(raw, bytes) else raw.encode()
    except (ValueError, UnicodeError) as exc:  # a gateway body that is not base64, or not encodable text
        raise BadRequest("the body could not be read as bytes") from exc
    return bodies.parse(data, config.get_settings().max_body_bytes)


def _plain_key() -> str:
    return request_headers.api_key(_request().headers)


def _caller() -> ApiKey:
    return keys.authenticate(get_deps(), _plain_key())


def _query() -> Mapping[str, Any]:
    return _request().query_params or {}


@app.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"status": "ok", "stage": STAGE, "websocket": config.get_settings().ws_url or None}


@app.route("/v1/jobs", methods=["POST"], content_types=BODY_TYPES)
@api
def submit_job() -> Response:
    plain_key = _plain_key()
    idem = request_headers.idempotency_key(_request().headers)
    accepted = submit.submit_job(get_deps(), plain_key, _json_body(), idem)
    headers: dict[str, str | list[str]] = {"Location": f"/v1/jobs/{accepted.job.id}"}
    if accepted.usage is not None:
        headers.update(usage_headers(accepted.usage))
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=accepted.view().model_dump(mode="json"), status_code=202, headers=headers)


@app.route("/v1/jobs/batch", methods=["POST"], content_types=BODY_TYPES)
@api
def submit_batch() -> Response:
    items = []
    for outcome in submit.submit_batch(get_deps(), _plain_key(), _json_body()):
        if isinstance(outcome, CodeRunnerError):
            detail = views.ErrorDetail(code=outcome.code, message=outcome.message, details=outcome.details)
            items.append(views.BatchItemView(status=status_of(outcome), error=detail))
        else:
            items.append(views.BatchItemView(status=202, job=outcome.view()))
    accepted = sum(1 for item in items if item.status == 202)
    view = views.BatchView(accepted=accepted, rejected=len(items) - accepted, results=items)
    return Response(body=view.model_dump(mode="json"), status_code=202 if accepted == len(items) else 207)


@app.route("/v1/jobs/{job_id}", methods=["GET"])
@api
def get_job(job_id: str) -> dict[str, Any]:
    wait = params.wait(_query())
    return queries.get_job(get_deps(), _caller(), job_id, wait).model_dump(mode="json")


@app.route("/v1/jobs/{job_id}", methods=["DELETE"])
@api
def cancel_job(job_id: str) -> dict[str, Any]:
    deps = get_deps()
    return queries.job_view(deps, lifecycle.cancel(deps, _caller(), job_id)).model_dump(mode="json")


@app.route("/v1/jobs", methods=["GET"])
@api
def list_jobs() -> dict[str, Any]:
    query, settings = _query(), config.get_settings()
    limit, status, token = params.limit(query), params.status(query), params.one(query, "cursor")
    caller = _caller()
    cursor = cursors.unseal(settings, caller.owner, token)
    page = queries.list_jobs(get_deps(), caller, limit, cursor, status)
    sealed = cursors.seal(settings, caller.owner, page.next_cursor)
    return page.model_copy(update={"next_cursor": sealed}).model_dump(mode="json")


@app.route("/v1/usage", methods=["GET"])
@api
def usage() -> dict[str, Any]:
    return queries.usage(get_deps(), _caller()).model_dump(mode="json")


@app.route("/v1/runtimes", methods=["GET"])
@api
def runtimes() -> dict[str, Any]:
    return catalog.describe(get_deps())


@app.route("/v1/queue", methods=["GET"])
@api
def queue() -> dict[str, Any]:
    _caller()
    return queries.queue_status(get_deps()).model_dump(mode="json")


# --- Static pages: the playground at `/`, its assets at `/static/{name}` (chalicelib/web). No key needed. ---
# Another page (e.g. `/docs`) is one more route calling `web.serve_page` with its own HTML file.
def _static(reply: web.Reply) -> Response:
    return Response(body=reply.body, status_code=reply.status, headers=dict(reply.headers))


@app.route("/", methods=["GET"])
@api
def playground() -> Response:
    request = _request()
    context: Mapping[str, Any] = request.context or {}
    return _static(web.serve_page("playground.html", request.headers.get("if-none-match"), context.get("path")))


@app.route("/static/{name}", methods=["GET"])
@api
def static_file(name: str) -> Response:
    request = _request()
    params: Mapping[str, str] = request.query_params or {}
    version = params.get("v")
    return _static(web.serve_asset(name, version, request.headers.get("if-none-match")))


# --- end of static pages ---


# --- The API's description (chalicelib/edge/openapi.py): OpenAPI 3.1 as JSON, and as a page. No key needed. ---
@app.route("/v1/openapi.json", methods=["GET"])
@api
def openapi_document() -> Response:
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
    return Response(body=openapi.document(), status_code=200, headers=headers)


@app.route("/docs", methods=["GET"])
@api
def api_docs() -> Response:
    return _static(web.serve_html(docs.render(openapi.document()), _request().headers.get("if-none-match")))


# --- end of the API's description ---


def http_api(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The API function's handler in AWS: an API Gateway HTTP API event (payload 2.0) routed to the app above
    as the REST proxy event Chalice reads (chalicelib/edge/httpapi.py). Locally, Chalice calls `app` itself."""
    return httpapi.handle(app, app.routes, event, context)


# --- Chalice's own refusals (405 unknown method, 415 content type) in the house format: chalicelib/edge/house.py
@app.middleware("http")
def house_errors(event: Request, get_response: Callable[[Request], Response]) -> Response:
    response = get_response(event)
    if response.status_code >= 500 and house.is_chalice_error(response):  # an exception outside `api`
        deps = get_deps()
        deps.metric(UNHANDLED_ERRORS, route="(chalice)")
        deps.flush_metrics()
    return house.as_house_error(response, _request_id())


# --- Delivering results (DESIGN.md section 8): events, webhooks, the WebSocket channel ----------------------


@app.route("/v1/events", methods=["GET"])
@api
def read_events() -> dict[str, Any]:
    query = _query()
    wait = params.wait(query)
    key = _caller()
    device = inbox_domain.normalize_device(params.one(query, "device"))
    return inbox.read(get_deps(), key.key_id, device, wait)


@app.route("/v1/events/ack", methods=["POST"], content_types=BODY_TYPES)
@api
def ack_events() -> dict[str, Any]:
    key, body = _caller(), _json_body()
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", [{"field": "(body)", "message": "not an object"}])
    device = inbox_domain.normalize_device(body.get("device"))
    return {"device": device, "removed": inbox.ack(get_deps(), key.key_id, device, body.get("through"))}


@app.route("/v1/ws-tickets", methods=["POST"], content_types=BODY_TYPES)
@api
def ws_ticket() -> dict[str, Any]:
    return channel.issue_ticket(get_deps(), _caller())


@app.route("/v1/webhook-secret", methods=["GET"])
@api
def webhook_secret() -> dict[str, Any]:
    return webhooks.show_secret(get_deps(), _caller())


@app.route("/v1/webhook-secret/rotate", methods=["POST"], content_types=BODY_TYPES)
@api
def rotate_webhook_secret() -> dict[str, Any]:
    return webhooks.rotate_secret(get_deps(), _caller())


@app.route("/v1/webhook", methods=["PUT"], content_types=BODY_TYPES)
@api
def set_webhook() -> dict[str, Any]:
    key, body = _caller(), _json_body()
    if not isinstance(body, dict) or "url" not in body:
        raise ValidationFailed('send {"url": "https://..."} (or null)', [{"field": "url", "message": "missing"}])
    return webhooks.set_default_url(get_deps(), key.key_id, body["url"])


# Chalice's websocket_api.session stays unset: nothing here posts through app.websocket_api. Replies and
# pushes go through the delivery ports' Connections adapter, whose boto3 client is built on first use from
# the configured endpoint (the workers push too, outside any WebSocket event).
@app.on_ws_connect()
@_flushing
def websocket_connect(event: Any) -> dict[str, Any]:
    raw = event.to_dict()
    try:
        channel.connect(
            get_deps(), event.connection_id, raw.get("headers") or {}, raw.get("queryStringParameters") or {}
        )
    except CodeRunnerError as exc:  # the handshake's answer says why, in the house error's shape
        return handshake_refusal(exc)
    return {"statusCode": 200}


@app.on_ws_message()
@_flushing
def websocket_message(event: Any) -> dict[str, Any]:
    channel.message(get_deps(), event.connection_id, event.body)
    return {"statusCode": 200}


@app.on_ws_disconnect()
@_flushing
def websocket_disconnect(event: Any) -> dict[str, Any]:
    channel.disconnect(get_deps(), event.connection_id)
    return {"statusCode": 200}


# Webhook attempts: a standard queue (per-message delays for the backoff) with its own DLQ. A batch of 5
# attempts of at most ~5 s each fits well inside the function's 60 s.
@app.on_sqs_message(queue=f"{APP_NAME}-{STAGE}-webhooks", batch_size=5, name="deliver_webhooks")
@_flushing
def deliver_webhooks(event: Any) -> dict[str, Any]:
    return webhooks.process_webhooks(get_deps(), event.to_dict(), event.context)


# --- end of result delivery --------------------------------------------------------------------------------


def _worker_queue(tier: str, dead_letter: bool = False) -> str:
    return tier_resources(tier).queue(STAGE, dead_letter)


@_flushing
def _run_jobs(event: Any) -> dict[str, Any]:
    return batches.process_jobs(get_deps(), event.to_dict(), event.context)


@_flushing
def _run_dead_letters(event: Any) -> dict[str, Any]:
    return batches.process_dead_letters(get_deps(), event.to_dict(), event.context)


# One worker and one dead-letter consumer per tier (chalicelib.deployment.TIER_NAMES; the settings refuse a tier
# that has none). One job per invocation: the Lambda timeout then bounds one job, and FIFO order holds per
# group. Worker concurrency is the tier's capacity (its weight), so a higher tier gets more workers.
@app.on_sqs_message(
    queue=_worker_queue("free"), batch_size=1, name="worker_free", maximum_concurrency=max(2, _capacity("free"))
)
def worker_free(event: Any) -> dict[str, Any]:
    return _run_jobs(event)


@app.on_sqs_message(
    queue=_worker_queue("pro"), batch_size=1, name="worker_pro", maximum_concurrency=max(2, _capacity("pro"))
)
def worker_pro(event: Any) -> dict[str, Any]:
    return _run_jobs(event)


@app.on_sqs_message(
    queue=_worker_queue("enterprise"),
    batch_size=1,
    name="worker_enterprise",
    maximum_concurrency=max(2, _capacity("enterprise")),
)
def worker_enterprise(event: Any) -> dict[str, Any]:
    return _run_jobs(event)


@app.on_sqs_message(queue=_worker_queue("free", dead_letter=True), batch_size=1, name="dlq_free")
def dlq_free(event: Any) -> dict[str, Any]:
    return _run_dead_letters(event)


@app.on_sqs_message(queue=_worker_queue("pro", dead_letter=True), batch_size=1, name="dlq_pro")
def dlq_pro(event: Any) -> dict[str, Any]:
    return _run_dead_letters(event)


@app.on_sqs_message(queue=_worker_queue("enterprise", dead_letter=True), batch_size=1, name="dlq_enterprise")
def dlq_enterprise(event: Any) -> dict[str, Any]:
    return _run_dead_letters(event)


@app.schedule(Rate(2, unit=Rate.MINUTES), name="cleanup")
@_flushing
def cleanup(event: Any) -> dict[str, int]:
    """Reap stuck jobs, re-drive orphans, release leaked slots."""
    return reaper.reap(get_deps())


@app.on_cw_event(
    {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {"lastStatus": ["STOPPED"], "group": [f"family:{APP_NAME}-{STAGE}-sandbox"]},
    },
    name="fargate_done",
)
@_flushing
def fargate_done(event: Any) -> str:
    from chalicelib.services.fargate import complete_from_event

    return complete_from_event(get_deps(), event.to_dict())


# The dedicated sandbox functions, one per memory class (chalicelib/sandbox/selection.py SANDBOX_MEMORY_CLASSES;
# .chalice/config.json sizes each): no permissions, no egress, reserved concurrency (see infra/). All run the same
# handler; the Lambda adapter invokes the smallest that holds a job's memory limit.
def _sandbox(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib.sandbox.lambda_entry import handle

    return handle(event, context)


@app.lambda_function(name="sandbox_1769")
def sandbox_1769(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Jobs up to 1,641 MB (1,769 MB: one full vCPU)."""
    return _sandbox(event, context)


@app.lambda_function(name="sandbox_3136")
def sandbox_3136(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Jobs up to 3,008 MB (the enterprise tier's largest)."""
    return _sandbox(event, context)


# Every deployed tier has its worker and dead-letter function above (refused at start otherwise).
_missing = missing_functions(TIER_NAMES, sys.modules[__name__])
if _missing:
    raise RuntimeError("; ".join(_missing))
