"""The live WebSocket channel: connect, messages, disconnect, the stale-connection sweep, and tickets.

Registry: one live connection per (key, device), held on the device's record by conditional writes. A
second connection for a device whose connection is alive is refused (409, with the reason); one whose old
connection is gone (API Gateway answers 410 to a probe) replaces it, so a device that dropped without a
$disconnect is never locked out. A connection registered moments ago counts as alive without a probe: its
handshake may not be finished, and API Gateway answers 410 for a connection until it is.

Authentication: `Authorization: Bearer <key>` on connect, or, for browsers (which cannot set headers on a
WebSocket), a one-minute single-use ticket from `POST /v1/ws-tickets` as `?ticket=`. An API key in the URL
is refused: logs keep URLs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from chalicelib.domain.errors import Conflict, Unauthorized, ValidationFailed
from chalicelib.domain.inbox import normalize_device
from chalicelib.services import inbox, keys
from chalicelib.services.deps import Deps
from chalicelib.services.inbox import ports
from chalicelib.services.ports import ApiKey

log = logging.getLogger(__name__)

TICKET_TTL_S = 60
FRESH_CONNECTION_S = 10.0  # a registration this young is alive (its handshake may still be under way)
CHECK_EVERY_S = 600.0  # the sweep probes each connection this often (API Gateway drops idle ones at 10 min)


def issue_ticket(deps: Deps, key: ApiKey) -> dict[str, Any]:
    """`POST /v1/ws-tickets`: a single-use ticket for one WebSocket connect within a minute."""
    ticket = "wst_" + secrets.token_urlsafe(24)
    ports(deps).webhooks.put_ticket(_hash(ticket), key.key_hash, deps.clock.now() + TICKET_TTL_S)
    return {"ticket": ticket, "expires_in": TICKET_TTL_S, "url": deps.settings.ws_url or None}


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def _caller(deps: Deps, headers: Mapping[str, str], query: Mapping[str, str]) -> ApiKey:
    if any(name in query for name in ("key", "api_key", "apikey", "token")):
        raise Unauthorized("never put an API key in a URL: send it as 'Authorization: Bearer', or use ?ticket=")
    ticket = query.get("ticket")
    if ticket:
        key_hash = ports(deps).webhooks.take_ticket(_hash(ticket), deps.clock.now())
        key = deps.keys.get(key_hash) if key_hash else None
        if key is None or key.revoked:
            raise Unauthorized("the ticket is unknown, used or expired: get a new one from POST /v1/ws-tickets")
        return key
    return keys.authenticate(deps, keys.bearer(headers.get("authorization"), headers.get("x-api-key")))


def connect(deps: Deps, connection_id: str, headers: Mapping[str, str], query: Mapping[str, str]) -> None:
    """`$connect`: authenticate, then register the connection as its device's one live connection.
    A refusal is the CodeRunnerError that says why (app.py renders it as the handshake's answer)."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    key = _caller(deps, lowered, query or {})
    device = normalize_device((query or {}).get("device"))
    _register(deps, key, device, connection_id)


def _register(deps: Deps, key: ApiKey, device: str, connection_id: str) -> None:
    delivery = ports(deps)
    now = deps.clock.now()
    current = delivery.devices.get(key.key_id, device)
    holder = current.connection_id if current else None
    if holder is not None and _alive(deps, holder, current.connected_at if current else None, now):
        raise Conflict(f"device '{device}' already has a live connection: close it first, or use another device name")
    if not delivery.devices.register(key.key_id, device, connection_id, now, holder):
        raise Conflict(f"device '{device}' was connected by another connection at the same moment")
    if holder is not None:
        delivery.devices.forget_connection(holder)
    delivery.devices.save_connection(connection_id, key.key_id, device, now + CHECK_EVERY_S)


def _alive(deps: Deps, connection_id: str, connected_at: float | None, now: float) -> bool:
    if connected_at is not None and now - connected_at < FRESH_CONNECTION_S:
        return True
    return ports(deps).connections.alive(connection_id)


def disconnect(deps: Deps, connection_id: str) -> None:
    """`$disconnect`: the device has no live connection any more (its inbox keeps what was not acked)."""
    delivery = ports(deps)
    owner = delivery.devices.connection(connection_id)
    if owner is not None:
        delivery.devices.unregister(owner[0], owner[1], connection_id)
    delivery.devices.forget_connection(connection_id)


def message(deps: Deps, connection_id: str, body: str) -> str:
    """A client message: `{"action": "ready"}` drains the inbox to this connection; `{"action": "ack",
    "through": "<event id>"}` removes what was pushed up to that id. Answers go back on the connection."""
    delivery = ports(deps)
    owner = delivery.devices.connection(connection_id)
    if owner is None:
        return _reply(deps, connection_id, {"type": "error", "message": "this connection is not registered"})
    key_id, device = owner
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    action = request.get("action") if isinstance(request, dict) else None
    if action == "ready":
        dropped = delivery.devices.set_ready(key_id, device, connection_id)
        if dropped is None:
            return _reply(deps, connection_id, {"type": "error", "message": "another connection holds this device"})
        _reply(deps, connection_id, {"type": "ready", "device": device, "dropped": dropped})
        inbox.drain(deps, key_id, device)
        return "ready"
    if action == "ack":
        try:
            removed = inbox.ack(deps, key_id, device, request.get("through") if isinstance(request, dict) else None)
        except ValidationFailed as exc:
            return _reply(deps, connection_id, {"type": "error", "message": exc.message})
        return _reply(deps, connection_id, {"type": "acked", "through": request["through"], "removed": removed})
    return _reply(deps, connection_id, {"type": "error", "message": "unknown action: send 'ready' or 'ack'"})


def _reply(deps: Deps, connection_id: str, payload: dict[str, Any]) -> str:
    try:
        ports(deps).connections.post(connection_id, json.dumps(payload))
    except Exception:  # noqa: BLE001 - a reply to a client that went away is not an error
        log.info("reply not delivered", extra={"connection_id": connection_id})
    return str(payload["type"])


def sweep(deps: Deps) -> int:
    """The cleanup's part: probe connections not checked for a while; forget the ones that are gone."""
    if deps.delivery is None:
        return 0
    delivery = deps.delivery
    now = deps.clock.now()
    removed = 0
    for connection_id, key_id, device in delivery.devices.due_checks(now):
        if delivery.connections.alive(connection_id):
            delivery.devices.checked(connection_id, now + CHECK_EVERY_S)
            continue
        delivery.devices.unregister(key_id, device, connection_id)
        delivery.devices.forget_connection(connection_id)
        removed += 1
    return removed
