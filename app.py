"""code-runner's Chalice app: thin handlers that parse, call one service, and map the result."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from botocore.exceptions import BotoCoreError, ClientError
from chalice import Chalice, Rate, Response
from chalice.app import Request

from chalicelib.bootstrap import get_deps
from chalicelib.config import APP_NAME, get_settings
from chalicelib.domain.errors import (
    BadRequest,
    CodeRunnerError,
    InternalError,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from chalicelib.domain.inbox import normalize_device
from chalicelib.services import batch as batches
from chalicelib.services import catalog, channel, inbox, keys, lifecycle, queries, reaper, submit, webhooks
from chalicelib.services.ipguard import IpGuard

app = Chalice(app_name=APP_NAME)
app.experimental_feature_flags.update(["WEBSOCKETS"])
logger = Logger(service=APP_NAME)
copy_config_to_registered_loggers(source_logger=logger)

# Queue names are needed when the app is imported (by `chalice package` too), so the stage comes from the
# environment with the same default as the settings.
STAGE = os.environ.get("CODERUNNER_STAGE", "dev")
BODY_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]
_guard: IpGuard | None = None


def _capacity(tier: str) -> int:
    return get_settings().capacity(tier)


def ip_guard() -> IpGuard:
    global _guard
    if _guard is None:
        _guard = IpGuard(get_settings().ip_per_minute)
    return _guard


def _request() -> Request:
    """The request being served (Chalice types it Optional; inside a route it is always set)."""
    request = app.current_request
    assert request is not None
    return request


def _error(exc: CodeRunnerError) -> Response:
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details is not None:
        body["details"] = exc.details
    return Response(
        body={"error": body}, status_code=exc.status, headers={"Content-Type": "application/json", **exc.headers}
    )


def _source_ip() -> str:
    context = _request().context or {}
    return str(context.get("identity", {}).get("sourceIp") or "unknown")


def api(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Per-IP guard, request logging context, and the one place where errors become HTTP responses."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        request = _request()
        ip = _source_ip()
        logger.append_keys(request_id=(request.context or {}).get("requestId"), job_id=kwargs.get("job_id"))
        try:
            ip_guard().charge(ip)
            return handler(*args, **kwargs)
        except Unauthorized as exc:
            ip_guard().failed_auth(ip)
            return _error(exc)
        except CodeRunnerError as exc:
            return _error(exc)
        except (ClientError, BotoCoreError) as exc:
            # Throttled or unreachable AWS: the services gave back whatever they had taken.
            logger.warning("dependency failure", extra={"error": str(exc)})
            return _error(
                ServiceUnavailable("a dependency is unavailable; retry shortly", headers={"Retry-After": "1"})
            )
        except Exception:
            logger.exception("unhandled error")
            return _error(InternalError("internal error; the request may be retried"))

    return wrapper


def _json_body() -> Any:
    raw = _request().raw_body or b""
    if len(raw) > get_settings().max_body_bytes:
        raise PayloadTooLarge(f"the body is larger than {get_settings().max_body_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc


def _plain_key() -> str:
    headers = _request().headers
    return keys.bearer(headers.get("authorization"), headers.get("x-api-key"))


def _caller() -> Any:
    return keys.authenticate(get_deps(), _plain_key())


@app.route("/health", methods=["GET"])
def health() -> dict[str, Any]:
    return {"status": "ok", "stage": STAGE, "websocket": get_settings().ws_url or None}


@app.route("/v1/jobs", methods=["POST"], content_types=BODY_TYPES)
@api
def submit_job() -> Response:
    idem = _request().headers.get("idempotency-key")
    accepted = submit.submit_job(get_deps(), _plain_key(), _json_body(), idem)
    headers: dict[str, str | list[str]] = {**accepted.headers, "Location": f"/v1/jobs/{accepted.job.id}"}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(body=accepted.body(), status_code=202, headers=headers)


@app.route("/v1/jobs/batch", methods=["POST"], content_types=BODY_TYPES)
@api
def submit_batch() -> Response:
    body = _json_body()
    jobs = body.get("jobs") if isinstance(body, dict) else None
    if not isinstance(jobs, list) or not 1 <= len(jobs) <= 20:
        raise ValidationFailed("'jobs' must be a list of 1 to 20 jobs", [{"field": "jobs", "message": "1..20"}])
    plain, deps, results = _plain_key(), get_deps(), []
    keys.authenticate(deps, plain)  # a bad key fails the whole batch with 401
    for item in jobs:
        try:
            accepted = submit.submit_job(deps, plain, item)
            results.append({"status": 202, "job": accepted.body()})
        except CodeRunnerError as exc:
            results.append(
                {"status": exc.status, "error": {"code": exc.code, "message": exc.message, "details": exc.details}}
            )
    accepted_n = sum(1 for r in results if r["status"] == 202)
    return Response(
        body={"accepted": accepted_n, "rejected": len(results) - accepted_n, "results": results},
        status_code=207 if accepted_n != len(results) else 202,
    )


@app.route("/v1/jobs/{job_id}", methods=["GET"])
@api
def get_job(job_id: str) -> dict[str, Any]:
    params: Mapping[str, str] = _request().query_params or {}
    wait = queries.parse_wait(params.get("wait"))
    return queries.get_job(get_deps(), _caller(), job_id, wait)


@app.route("/v1/jobs/{job_id}", methods=["DELETE"])
@api
def cancel_job(job_id: str) -> dict[str, Any]:
    deps = get_deps()
    return queries.job_view(deps, lifecycle.cancel(deps, _caller(), job_id))


@app.route("/v1/jobs", methods=["GET"])
@api
def list_jobs() -> dict[str, Any]:
    params: Mapping[str, str] = _request().query_params or {}
    return queries.list_jobs(get_deps(), _caller(), params.get("limit"), params.get("cursor"))


@app.route("/v1/usage", methods=["GET"])
@api
def usage() -> dict[str, Any]:
    return queries.usage(get_deps(), _caller())


@app.route("/v1/runtimes", methods=["GET"])
@api
def runtimes() -> dict[str, Any]:
    return catalog.describe()


@app.route("/v1/queue", methods=["GET"])
@api
def queue() -> dict[str, Any]:
    _caller()
    return queries.queue_status(get_deps())


# --- Delivering results (DESIGN.md section 8): events, webhooks, the WebSocket channel ----------------------


def _query() -> Mapping[str, str]:
    return _request().query_params or {}


@app.route("/v1/events", methods=["GET"])
@api
def read_events() -> dict[str, Any]:
    params = _query()
    key = _caller()
    device = normalize_device(params.get("device"))
    return inbox.read(get_deps(), key.key_id, device, queries.parse_wait(params.get("wait")))


@app.route("/v1/events/ack", methods=["POST"], content_types=BODY_TYPES)
@api
def ack_events() -> dict[str, Any]:
    key, body = _caller(), _json_body()
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", [{"field": "(body)", "message": "not an object"}])
    device = normalize_device(body.get("device"))
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
def websocket_connect(event: Any) -> dict[str, Any]:
    raw = event.to_dict()
    return channel.connect(
        get_deps(), event.connection_id, raw.get("headers") or {}, raw.get("queryStringParameters") or {}
    )


@app.on_ws_message()
def websocket_message(event: Any) -> dict[str, Any]:
    channel.message(get_deps(), event.connection_id, event.body)
    return {"statusCode": 200}


@app.on_ws_disconnect()
def websocket_disconnect(event: Any) -> dict[str, Any]:
    channel.disconnect(get_deps(), event.connection_id)
    return {"statusCode": 200}


# Webhook attempts: a standard queue (per-message delays for the backoff) with its own DLQ. A batch of 5
# attempts of at most ~5 s each fits well inside the function's 60 s.
@app.on_sqs_message(queue=f"{APP_NAME}-{STAGE}-webhooks", batch_size=5, name="deliver_webhooks")
def deliver_webhooks(event: Any) -> dict[str, Any]:
    return webhooks.process_webhooks(get_deps(), event.to_dict(), event.context)


# --- end of result delivery --------------------------------------------------------------------------------


def _worker_queue(tier: str, dead_letter: bool = False) -> str:
    return f"{APP_NAME}-{STAGE}-{tier}{'-dlq' if dead_letter else ''}.fifo"


def _run_jobs(event: Any) -> dict[str, Any]:
    return batches.process_jobs(get_deps(), event.to_dict(), event.context)


def _run_dead_letters(event: Any) -> dict[str, Any]:
    return batches.process_dead_letters(get_deps(), event.to_dict(), event.context)


# One worker and one dead-letter consumer per tier (chalicelib.config.TIER_NAMES; the settings refuse a tier
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
def fargate_done(event: Any) -> str:
    from chalicelib.services.fargate import complete_from_event

    return complete_from_event(get_deps(), event.to_dict())


@app.lambda_function(name="sandbox")
def sandbox(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The dedicated sandbox function: no permissions, no egress, reserved concurrency (see infra/)."""
    from chalicelib.sandbox.lambda_entry import handle

    return handle(event, context)
