"""Signed webhooks (Standard Webhooks): the key's secret and default URL, the SSRF check, one attempt, and
the retry schedule on the webhook queue.

Each attempt is one message of the (standard) webhook queue. A failed attempt sends the next one as a new
message delayed by the backoff: about 5 attempts over an hour. SQS delays a message by at most 900 s, so a
longer wait travels as several hops, each re-sent with the time it still has to wait (`not_before`). Every
attempt is signed afresh with its own timestamp, since receivers reject old ones. The target is resolved and
checked again at every attempt (DNS rebinding), and the request goes to the checked address.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from typing import Any

from chalicelib.domain import webhooks as wh
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.events import webhook_message_id
from chalicelib.domain.ssrf import Target, TargetRefused, check_addresses, literal_address, parse_target
from chalicelib.domain.webhooks import Outcome, WebhookConfig, WebhookDelivery, WebhookState
from chalicelib.services.deps import Deps
from chalicelib.services.inbox import ports
from chalicelib.services.ports import ApiKey

log = logging.getLogger(__name__)


def new_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return wh.SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_of(deps: Deps, key_id: str) -> WebhookConfig:
    """The key's webhook config with a secret, the secret being created on first use."""
    store = ports(deps).webhooks
    config = store.get(key_id)
    if config is not None and config.secret:
        return config
    return store.create_secret(key_id, new_secret())


def show_secret(deps: Deps, key: ApiKey) -> dict[str, Any]:
    """`GET /v1/webhook-secret`."""
    config = secret_of(deps, key.key_id)
    return _secret_view(deps, config)


def rotate_secret(deps: Deps, key: ApiKey) -> dict[str, Any]:
    """`POST /v1/webhook-secret/rotate`: a new secret; the old one keeps signing (and so verifying) 24 h."""
    secret_of(deps, key.key_id)
    until = deps.clock.now() + wh.ROTATION_OVERLAP_S
    return _secret_view(deps, ports(deps).webhooks.rotate(key.key_id, new_secret(), until))


def _secret_view(deps: Deps, config: WebhookConfig) -> dict[str, Any]:
    previous = config.previous_until if config.previous_secret and config.previous_until > deps.clock.now() else None
    return {"secret": config.secret, "previous_secret_valid_until": previous}


def resolve_target(deps: Deps, url: str) -> tuple[Target, str]:
    """The target and the one checked address to connect to; TargetRefused says why not."""
    allow = deps.settings.webhook_allow_loopback
    target = parse_target(url, allow_loopback_http=allow)
    literal = literal_address(target.host)
    addresses = [str(literal)] if literal is not None else ports(deps).resolver.resolve(target.host, target.port)
    return target, str(check_addresses(target, addresses, allow_loopback=allow))


def check_url(deps: Deps, url: str | None, field: str = "callback_url") -> None:
    """At submit (and when a default URL is set): 422 naming `field` and the reason if `url` may not receive
    webhooks."""
    if url is None:
        return
    if deps.delivery is None:
        raise ValidationFailed("webhooks are not configured here", [{"field": field, "message": "not configured"}])
    try:
        resolve_target(deps, url)
    except TargetRefused as exc:
        raise ValidationFailed(f"'{field}' is not allowed: {exc}", [{"field": field, "message": str(exc)}]) from exc


def set_default_url(deps: Deps, key_id: str, url: object) -> dict[str, Any]:
    """`PUT /v1/webhook` (and `coderunner keys set-webhook`): the key's default URL, or none with null."""
    if url is not None and not isinstance(url, str):
        raise ValidationFailed("'url' must be a string or null", [{"field": "url", "message": "not a string"}])
    if url is not None and len(url) > 2048:
        raise ValidationFailed("'url' is too long", [{"field": "url", "message": "at most 2048 characters"}])
    check_url(deps, url, "url")
    config = ports(deps).webhooks.set_url(key_id, url)
    return {"url": config.url}


def enqueue(deps: Deps, job_id: str, key_id: str, body: str, url: str) -> None:
    """Schedule the first attempt of a job's webhook."""
    ports(deps).webhook_queue.send(
        {"job_id": job_id, "key_id": key_id, "url": url, "body": body, "attempt": 1, "not_before": 0}
    )


def attempt(deps: Deps, message: dict[str, Any]) -> str:
    """One message of the webhook queue: wait more, or make the attempt and schedule the next; returns what
    happened. Raises only for a platform fault (the message then comes back after its visibility timeout)."""
    delivery = ports(deps)
    now = deps.clock.now()
    remaining = float(message.get("not_before", 0)) - now
    if remaining > 1:
        delivery.webhook_queue.send(message, wh.hop(remaining))
        return "deferred"
    number = int(message["attempt"])
    config = secret_of(deps, str(message["key_id"]))
    url = str(message["url"])
    if url in config.disabled:
        error = "the URL answered 410 Gone earlier: set it again (PUT /v1/webhook) to enable it"
        _record(deps, message, WebhookDelivery(state=WebhookState.FAILED, attempts=number - 1, error=error))
        return "disabled"
    try:
        target, address = resolve_target(deps, url)
    except TargetRefused as exc:
        _record(deps, message, WebhookDelivery(state=WebhookState.FAILED, attempts=number - 1, error=str(exc)))
        return "refused"
    body = str(message["body"])
    headers = wh.headers(config.signing_secrets(now), webhook_message_id(str(message["job_id"])), int(now), body)
    headers["host"] = target.host_header
    headers["user-agent"] = "code-runner-webhooks/1"
    answer = delivery.sender.post(address, target.scheme, target.host, target.port, target.path, headers, body.encode())
    return _after(deps, message, number, answer.status, answer.error)


def _after(deps: Deps, message: dict[str, Any], number: int, status: int | None, error: str | None) -> str:
    result = wh.outcome(status, number)
    if result is Outcome.DELIVERED:
        state = WebhookDelivery(state=WebhookState.DELIVERED, attempts=number, last_status=status)
    elif result is Outcome.GONE:
        ports(deps).webhooks.disable(str(message["key_id"]), str(message["url"]))
        state = WebhookDelivery(state=WebhookState.FAILED, attempts=number, last_status=status, error="gone (410)")
    elif result is Outcome.RETRY:
        wait = wh.wait_after(number)
        follow = {**message, "attempt": number + 1, "not_before": deps.clock.now() + wait}
        ports(deps).webhook_queue.send(follow, wh.hop(wait))
        state = WebhookDelivery(state=WebhookState.PENDING, attempts=number, last_status=status, error=error)
    else:
        state = WebhookDelivery(state=WebhookState.FAILED, attempts=number, last_status=status, error=error)
    _record(deps, message, state)
    deps.metric("WebhookAttempts", outcome=result.value)
    return result.value


def _record(deps: Deps, message: dict[str, Any], state: WebhookDelivery) -> None:
    ports(deps).job_events.set_webhook(str(message["job_id"]), state)


def process_webhooks(deps: Deps, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A batch of the webhook queue (Lambda's SQS event, or the local worker loop's): one attempt per
    message; a platform fault is reported in `batchItemFailures` and the message comes back."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    def record_handler(record: SQSRecord) -> str:
        message = parse_message(record.body)
        if message is None:
            log.error("malformed webhook message dropped", extra={"message_id": record.message_id})
            return "malformed"
        return attempt(deps, message)

    if not event.get("Records"):
        return {"batchItemFailures": []}
    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


def parse_message(raw: str) -> dict[str, Any] | None:
    """A webhook queue message, or None when it is not one of ours."""
    try:
        message = json.loads(raw)
    except ValueError:
        return None
    needed = ("job_id", "key_id", "url", "body", "attempt")
    return message if isinstance(message, dict) and all(k in message for k in needed) else None
