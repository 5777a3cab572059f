"""Offline inboxes and the push of their events to a live connection (DESIGN.md section 8).

Every event for a device is first written to the device's inbox; a connected device that said "ready" gets
it pushed by a *drain*, and an event leaves the inbox only when the client acknowledges it. So a connection
that drops mid-drain loses nothing: on reconnect the inbox drains again, in order.

Only the holder of the device's drain lease pushes to its connection, so two pushers never interleave and
the events go out in inbox (event id) order. A pusher that finds the lease taken stops; the holder reads the
inbox once more after giving the lease back, and so sees anything written before it did (no lost wake-up).
If the holder dies, the lease expires (DRAIN_LEASE_S) and the next event, or the client's next "ready",
drains again.
"""

from __future__ import annotations

import json
import logging
import time

from chalicelib.domain.errors import NotFound, ValidationFailed
from chalicelib.domain.events import is_event_id
from chalicelib.domain.inbox import INBOX_CAP, INBOX_TTL_S, InboxEntry, acknowledged, in_order, over_cap
from chalicelib.services.delivery_ports import ConnectionGone, DeliveryPorts
from chalicelib.services.deps import Deps

log = logging.getLogger(__name__)

DRAIN_LEASE_S = 30.0
MAX_DRAIN_ROUNDS = 5
_POLL_S = 0.2


def ports(deps: Deps) -> DeliveryPorts:
    """The delivery ports; NotFound when this deployment has none wired (never the case in the app)."""
    if deps.delivery is None:
        raise NotFound("result delivery is not configured on this deployment")
    return deps.delivery


def store(deps: Deps, key_id: str, device: str, event_id: str, body: str) -> None:
    """Put an event in a device's inbox and keep the inbox at its cap (the oldest go, and are counted)."""
    delivery = ports(deps)
    now = deps.clock.now()
    delivery.inbox.put(key_id, device, InboxEntry(event_id, body, now + INBOX_TTL_S))
    trim(deps, key_id, device, delivery.inbox.entries(key_id, device))


def trim(deps: Deps, key_id: str, device: str, entries: list[InboxEntry]) -> list[InboxEntry]:
    """Drop what is over the cap (counted) and what expired (not counted); return the visible rest."""
    delivery = ports(deps)
    now = deps.clock.now()
    expired = [e.event_id for e in entries if not e.visible(now)]
    if expired:
        delivery.inbox.remove(key_id, device, expired)
    excess = over_cap(entries, now)
    if excess:
        # Conditional deletes: when two writers trim the same excess at once, each drop is counted once.
        dropped = delivery.inbox.remove(key_id, device, [e.event_id for e in excess])
        if dropped:
            delivery.devices.add_dropped(key_id, device, dropped)
    gone = {e.event_id for e in excess}
    return [e for e in in_order(entries, now) if e.event_id not in gone]


def read(deps: Deps, key_id: str, device: str, wait_s: float = 0.0) -> dict[str, object]:
    """`GET /v1/events`: the device's events oldest first (at most 50), without removing them; waits up to
    `wait_s` for one. What is returned counts as handed out, so an ack may remove it."""
    delivery = ports(deps)
    deadline = time.monotonic() + wait_s
    poll = _POLL_S
    while True:
        entries = trim(deps, key_id, device, delivery.inbox.entries(key_id, device))[:INBOX_CAP]
        if entries or time.monotonic() >= deadline:
            break
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
        poll = min(poll * 1.5, 1.0)
    ids = [e.event_id for e in entries]
    dropped = delivery.devices.seen(key_id, device, deps.clock.now(), ids)
    return {"device": device, "events": [json.loads(e.body) for e in entries], "dropped": dropped}


def ack(deps: Deps, key_id: str, device: str, through: object) -> int:
    """Remove the events handed to this device up to and including `through`; how many were removed.
    Events that arrived after the read are not touched, whatever their id."""
    if not isinstance(through, str) or not is_event_id(through):
        raise ValidationFailed("'through' must be an event id", [{"field": "through", "message": "evt_ + 12 digits"}])
    delivery = ports(deps)
    current = delivery.devices.get(key_id, device)
    if current is None:
        return 0
    ids = acknowledged(current.sent, through)
    if not ids:
        return 0
    removed = delivery.inbox.remove(key_id, device, ids)
    delivery.devices.forget_sent(key_id, device, ids)
    return removed


def drain(deps: Deps, key_id: str, device: str) -> int:
    """Push the device's unsent inbox events to its connection, in order, if it is connected and ready and
    nobody else is pushing; returns how many were pushed."""
    delivery = ports(deps)
    pushed = 0
    for _ in range(MAX_DRAIN_ROUNDS):
        holder = delivery.devices.acquire_drain(key_id, device, deps.clock.now(), DRAIN_LEASE_S)
        if holder is None or holder.connection_id is None:
            return pushed
        pending = _unsent(deps, key_id, device, holder.sent)
        sent: list[str] = []
        try:
            for entry in pending:
                delivery.connections.post(holder.connection_id, entry.body)
                sent.append(entry.event_id)
        except ConnectionGone:
            log.info("connection gone during a drain", extra={"key_id": key_id, "device": device})
            delivery.devices.unregister(key_id, device, holder.connection_id)
            delivery.devices.forget_connection(holder.connection_id)
            return pushed + len(sent)
        finally:
            delivery.devices.release_drain(key_id, device, holder.connection_id, sent)
        pushed += len(sent)
        # Written while we held the lease? Its writer found the lease taken and left it to us.
        if not _unsent(deps, key_id, device, holder.sent | frozenset(sent)):
            return pushed
    return pushed


def _unsent(deps: Deps, key_id: str, device: str, sent: frozenset[str]) -> list[InboxEntry]:
    entries = in_order(ports(deps).inbox.entries(key_id, device), deps.clock.now())
    return [e for e in entries if e.event_id not in sent][:INBOX_CAP]
