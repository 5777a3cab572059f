"""Devices and their offline inbox: names, the cap, expiry, what an ack removes. Pure rules, no I/O.

A device is a name a client picks for one of its installations ("laptop-1"); each (key, device) has one
inbox. The inbox keeps the newest INBOX_CAP events for INBOX_TTL_S, in event-id order. An event leaves it
only when the client acknowledges it, and an ack removes only events that were handed to the client (by a
read or a WebSocket push): an event that arrived after the read, even with a smaller id, stays.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chalicelib.domain.errors import ValidationFailed

INBOX_CAP = 50  # events per device; the oldest is dropped (and counted) beyond this
INBOX_TTL_S = 24 * 3600  # an event waits this long in an inbox (DynamoDB TTL, plus a check on read)
DEVICE_ACTIVE_S = 24 * 3600  # a job without a device goes to the devices seen within this
MAX_FANOUT_DEVICES = 20  # ... at most this many of them, the most recently seen
DEVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def normalize_device(raw: object, field_name: str = "device") -> str:
    """A device name, trimmed and lower-cased ("Laptop-1 " -> "laptop-1"); ValidationFailed naming the field
    when it is missing or outside `[a-z0-9][a-z0-9._-]{0,63}`."""
    name = raw.strip().lower() if isinstance(raw, str) else ""
    if not DEVICE_NAME.match(name):
        message = "a device name is 1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
        raise ValidationFailed(message, [{"field": field_name, "message": message}])
    return name


@dataclass(frozen=True)
class InboxEntry:
    """One event waiting in a device's inbox."""

    event_id: str
    body: str  # the event's JSON, exactly as delivered
    expires_at: float

    def visible(self, now: float) -> bool:
        # DynamoDB's TTL deletes late (up to days): an expired entry is treated as gone on every read.
        return self.expires_at > now


@dataclass(frozen=True)
class Device:
    """A device of a key: its live connection (if any) and its inbox bookkeeping."""

    key_id: str
    name: str
    connection_id: str | None = None
    connected_at: float | None = None
    ready: bool = False  # the client said "ready": its inbox may be pushed to its connection
    seen_at: float | None = None  # last connect or inbox read
    sent: frozenset[str] = field(default_factory=frozenset)  # handed to the client, not yet acknowledged
    dropped: int = 0  # events pushed out by the cap since the last read
    lease_until: float | None = None  # a drain of the inbox to the connection is under way until then

    def active(self, now: float) -> bool:
        return self.seen_at is not None and now - self.seen_at <= DEVICE_ACTIVE_S


def in_order(entries: list[InboxEntry], now: float) -> list[InboxEntry]:
    """The visible entries, oldest (smallest event id) first."""
    return sorted((e for e in entries if e.visible(now)), key=lambda e: e.event_id)


def over_cap(entries: list[InboxEntry], now: float, cap: int = INBOX_CAP) -> list[InboxEntry]:
    """The visible entries to drop so that the newest `cap` remain."""
    ordered = in_order(entries, now)
    return ordered[: max(0, len(ordered) - cap)]


def acknowledged(sent: frozenset[str], through: str) -> list[str]:
    """The ids an ack `through` removes: those handed to the client, up to and including `through`."""
    return sorted(i for i in sent if i <= through)


def fanout_targets(devices: list[Device], named: str | None, now: float) -> list[str]:
    """Where a job's event goes: the device it named, or every device of the key seen in the last 24 h
    (the most recent MAX_FANOUT_DEVICES of them)."""
    if named:
        return [named]
    active = sorted((d for d in devices if d.active(now)), key=lambda d: -(d.seen_at or 0))
    return [d.name for d in active[:MAX_FANOUT_DEVICES]]
