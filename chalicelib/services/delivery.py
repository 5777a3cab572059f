"""One `job.finished` event per terminal job, fanned out to the key's webhook and devices.

Nothing lost: the write that makes a job terminal also marks it `unpublished` (a sparse index attribute on
the job record, see adapters/job_events_dynamodb.py). `job_finished` runs right after that write and clears
the marker only once the event reached every destination: the webhook queue and each device's inbox (the
live push follows from the inbox). If the worker dies in between, the scheduled cleanup finds the marked job
and calls `job_finished` again (`republish`). Producing is idempotent: the event id is allocated once per
job by a conditional write, the event's body derives only from the job, an inbox entry is keyed by the event
id, and a webhook carries the same `webhook-id` on every send, so a second production is a duplicate that
clients drop by id, never a second event.

AWS requests per job, when it is produced (no callback, one device, offline): UpdateItem (key's event
counter) + UpdateItem (claim the id on the job) + GetItem (webhook config) + Query (devices) + per target
device PutItem, Query (inbox, cap) and a refused UpdateItem (drain lease: not connected) + UpdateItem (clear
the marker) = 8; a webhook adds one SendMessage; a connected device adds the push (Query, PostToConnection,
UpdateItem release, Query).

An event with nowhere to go (no callback URL, no webhook set for the key, no device seen in the last 24 h) is
not produced at all: `destinations` looks before the terminal write (GetItem + Query), and the terminal write
then leaves no marker (lifecycle.end_job), so such a job costs no event id and no marker writes: the two
reads, where it used to cost those reads plus three writes and an index write. A webhook or device set while
a job is ending (between that look and the terminal write, one request) may miss that one job's event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chalicelib.domain.events import build_event
from chalicelib.domain.inbox import fanout_targets
from chalicelib.domain.jobs import Job
from chalicelib.domain.webhooks import WebhookConfig, WebhookDelivery, WebhookState
from chalicelib.services import inbox, webhooks
from chalicelib.services.deps import Deps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Destinations:
    """Where a job's event goes: the webhook URL (the job's callback or the key's) and the devices."""

    config: WebhookConfig | None
    url: str | None
    devices: list[str]

    @property
    def anywhere(self) -> bool:
        return bool(self.url or self.devices)


def destinations(deps: Deps, job: Job) -> Destinations | None:
    """Where `job`'s event would go now; None when that is not known (no delivery wired here, or the reads
    failed): the caller then keeps the unpublished marker, and whoever publishes the event looks again."""
    if deps.delivery is None:
        return None
    try:
        return _lookup(deps, job)
    except Exception:  # noqa: BLE001 - unknown destinations: the job is marked and the event produced later
        log.warning("event destinations not read; the event is produced later", extra={"job_id": job.id})
        return None


def _lookup(deps: Deps, job: Job) -> Destinations:
    delivery = inbox.ports(deps)
    config = delivery.webhooks.get(job.key_id)
    url = job.spec.callback_url or (config.url if config else None)
    named = job.spec.device
    devices = fanout_targets([] if named else delivery.devices.devices(job.key_id), named, deps.clock.now())
    return Destinations(config, url, devices)


def job_finished(deps: Deps, job: Job, where: Destinations | None = None) -> bool:
    """Produce and fan out the event of `job`, which just reached a terminal state (to `where`, when the
    caller looked already). Never raises: the job is terminal whatever happens here, and the cleanup produces
    the event later if this fails."""
    if deps.delivery is None or not job.status.terminal:
        return False
    try:
        publish(deps, job, where)
        return True
    except Exception:  # noqa: BLE001 - the job's unpublished marker makes the cleanup try again
        log.exception("event not produced yet; the cleanup will retry", extra={"job_id": job.id})
        deps.metric("EventsDeferred", tier=job.tier)
        return False


def publish(deps: Deps, job: Job, where: Destinations | None = None) -> str:
    """Allocate (or reuse) the job's event id, deliver the event everywhere it goes, clear the marker."""
    delivery = inbox.ports(deps)
    event = build_event(job, delivery.job_events.allocate(job))
    body = event.body()
    where = where or _lookup(deps, job)
    config, url, targets = where.config, where.url, where.devices
    webhook = None
    if url:
        if config is not None and url in config.disabled:
            error = "the URL answered 410 Gone earlier: set it again (PUT /v1/webhook) to enable it"
            webhook = WebhookDelivery(state=WebhookState.FAILED, error=error)
        else:
            webhooks.enqueue(deps, job.id, job.key_id, body, url)
            webhook = WebhookDelivery(state=WebhookState.PENDING)
    for device in targets:
        inbox.store(deps, job.key_id, device, event.id, body)
    for device in targets:
        try:
            inbox.drain(deps, job.key_id, device)
        except Exception:  # noqa: BLE001 - the event is in the inbox; the client's next "ready" drains it
            log.warning("live push failed", extra={"job_id": job.id, "device": device}, exc_info=True)
    delivery.job_events.published(job.id, targets, webhook)
    deps.metric("EventsProduced", tier=job.tier)
    return event.id


def republish(deps: Deps) -> int:
    """The cleanup's part: produce the events of terminal jobs whose fan-out never finished."""
    if deps.delivery is None:
        return 0
    produced = 0
    for job in deps.delivery.job_events.unpublished(deps.clock.now()):
        produced += job_finished(deps, job)
    return produced
