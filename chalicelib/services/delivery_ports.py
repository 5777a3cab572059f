"""The ports of result delivery (DESIGN.md section 8). DynamoDB, SQS, API Gateway and HTTP adapters implement
them in chalicelib/adapters; tests/fakes_delivery.py has the in-memory fakes (the contract tests run the same
assertions on both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chalicelib.domain.inbox import Device, InboxEntry
from chalicelib.domain.jobs import Job
from chalicelib.domain.webhooks import WebhookConfig, WebhookDelivery


class ConnectionGone(Exception):
    """The WebSocket connection does not exist any more (API Gateway's 410 GoneException)."""


class JobEvents(Protocol):
    """The delivery bookkeeping of terminal jobs, on the job records themselves."""

    def allocate(self, job: Job) -> str:
        """The job's event id: allocated once (the key's counter, then a conditional write on the job); a
        second call, or a racing one, returns the id stored first."""

    def published(self, job_id: str, inbox: list[str], webhook: WebhookDelivery | None) -> None:
        """The event was produced: record where it went and clear the job's `unpublished` marker."""

    def set_webhook(self, job_id: str, state: WebhookDelivery) -> None:
        """Record the webhook delivery's state after an attempt."""

    def unpublished(self, now: float, limit: int = 100) -> list[Job]:
        """Terminal jobs whose event was still not produced at `now` (the reaper publishes them)."""


class Inbox(Protocol):
    """Per (key, device) inboxes of events, ordered by event id."""

    def put(self, key_id: str, device: str, entry: InboxEntry) -> None:
        """Store an event (idempotent: the same event id overwrites itself)."""

    def entries(self, key_id: str, device: str) -> list[InboxEntry]:
        """Every stored entry (expired ones included), oldest first, read consistently."""

    def remove(self, key_id: str, device: str, event_ids: list[str]) -> int:
        """Delete these entries; how many were there to delete (a concurrent remover's are not counted)."""


class DeviceRegistry(Protocol):
    """Devices, their one live connection each, and what was handed to them."""

    def devices(self, key_id: str) -> list[Device]: ...

    def get(self, key_id: str, device: str) -> Device | None: ...

    def seen(self, key_id: str, device: str, now: float, handed_out: list[str]) -> int:
        """An inbox read: note the time and the ids handed out; return (and reset) the dropped count."""

    def add_dropped(self, key_id: str, device: str, count: int) -> None: ...

    def forget_sent(self, key_id: str, device: str, event_ids: list[str]) -> None: ...

    def register(self, key_id: str, device: str, connection_id: str, now: float, replacing: str | None) -> bool:
        """Make `connection_id` the device's connection if it has none (`replacing` None) or still has
        `replacing`; False when another connection holds it. A new connection starts with nothing sent."""

    def set_ready(self, key_id: str, device: str, connection_id: str) -> int | None:
        """The connection said "ready": return (and reset) the dropped count; None if it is not the device's."""

    def unregister(self, key_id: str, device: str, connection_id: str) -> None:
        """Clear the device's connection if it is still `connection_id`."""

    def acquire_drain(self, key_id: str, device: str, now: float, lease_s: float) -> Device | None:
        """Take the device's drain lease if it has a ready connection and nobody holds the lease."""

    def release_drain(self, key_id: str, device: str, connection_id: str, sent: list[str]) -> None:
        """Record what was pushed to the connection and give the lease back."""

    def save_connection(self, connection_id: str, key_id: str, device: str, check_at: float) -> None:
        """Remember whose connection `connection_id` is (messages and $disconnect name only the id)."""

    def connection(self, connection_id: str) -> tuple[str, str] | None:
        """(key id, device) of a connection."""

    def forget_connection(self, connection_id: str) -> None: ...

    def due_checks(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        """(connection id, key id, device) of connections whose liveness check is due."""

    def checked(self, connection_id: str, next_check: float) -> None: ...


class WebhookStore(Protocol):
    """Per-key webhook settings (URL, secrets, disabled URLs) and WebSocket tickets."""

    def get(self, key_id: str) -> WebhookConfig | None: ...

    def create_secret(self, key_id: str, secret: str) -> WebhookConfig:
        """Store `secret` if the key has none yet; return the config as it then stands."""

    def rotate(self, key_id: str, secret: str, previous_until: float) -> WebhookConfig:
        """Make `secret` current; the current one becomes the previous, valid until `previous_until`."""

    def set_url(self, key_id: str, url: str | None) -> WebhookConfig:
        """Set (or clear) the key's default URL; setting a URL enables it again if a 410 had disabled it."""

    def disable(self, key_id: str, url: str) -> None: ...

    def put_ticket(self, ticket_hash: str, key_hash: str, expires_at: float) -> None: ...

    def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        """The key hash of an unexpired ticket, consumed atomically (single use); None otherwise."""


class Connections(Protocol):
    """The WebSocket API's management endpoint (API Gateway's, or the local server's)."""

    def post(self, connection_id: str, data: str) -> None:
        """Send one message; ConnectionGone when the connection is gone."""

    def alive(self, connection_id: str) -> bool: ...


class WebhookQueue(Protocol):
    def send(self, message: dict[str, object], delay_s: int = 0) -> None: ...


class Resolver(Protocol):
    def resolve(self, host: str, port: int) -> list[str]:
        """Every address `host` resolves to (empty when it does not resolve)."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: no answer (refused, timed out, TLS failure)
    error: str | None = None


class WebhookSender(Protocol):
    def post(
        self, address: str, scheme: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
    ) -> HttpAnswer:
        """POST to `address` (already checked) with the Host header and TLS name of `host`; never follows a
        redirect, times out, reads at most a few KiB of the answer."""


@dataclass
class DeliveryPorts:
    job_events: JobEvents
    inbox: Inbox
    devices: DeviceRegistry
    webhooks: WebhookStore
    connections: Connections
    webhook_queue: WebhookQueue
    resolver: Resolver
    sender: WebhookSender
