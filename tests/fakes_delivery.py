"""In-memory fakes of the result-delivery ports (chalicelib/services/delivery_ports.py), checked against the
DynamoDB and API Gateway adapters by tests/integration/test_delivery_contracts.py."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any

from chalicelib.domain.events import event_id
from chalicelib.domain.inbox import Device, InboxEntry
from chalicelib.domain.jobs import Job
from chalicelib.domain.webhooks import WebhookConfig, WebhookDelivery
from chalicelib.services.delivery_ports import ConnectionGone, DeliveryPorts, HttpAnswer


class MemoryJobEvents:
    """Works on a MemoryJobStore's jobs, as the DynamoDB adapter works on the jobs table."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs  # a tests.fakes.MemoryJobStore
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()

    def allocate(self, job: Job) -> str:
        if job.event_id:
            return job.event_id
        with self.lock:
            self.counters[job.key_id] = self.counters.get(job.key_id, 0) + 1
            allocated = event_id(self.counters[job.key_id])
            current = self.jobs.jobs[job.id]
            if current.event_id:
                return str(current.event_id)
            self.jobs.jobs[job.id] = current.model_copy(update={"event_id": allocated})
            return allocated

    def published(self, job_id: str, inbox: list[str], webhook: WebhookDelivery | None) -> None:
        with self.lock:
            current = self.jobs.jobs[job_id]
            update: dict[str, Any] = {"inbox_devices": list(inbox), "due_at": None}  # the marker goes
            if webhook is not None and current.webhook_delivery is None:
                update["webhook_delivery"] = webhook
            self.jobs.jobs[job_id] = current.model_copy(update=update)

    def set_webhook(self, job_id: str, state: WebhookDelivery) -> None:
        with self.lock:
            self.jobs.jobs[job_id] = self.jobs.jobs[job_id].model_copy(update={"webhook_delivery": state})

    def unpublished(self, now: float, limit: int = 100) -> list[Job]:
        # A terminal job keeps its due time (finished + grace) until its event is produced.
        due = [j for j in self.jobs.jobs.values() if j.status.terminal and j.due_at is not None and j.due_at <= now]
        return due[:limit]


class MemoryInbox:
    def __init__(self) -> None:
        self.boxes: dict[tuple[str, str], dict[str, InboxEntry]] = {}
        self.lock = threading.Lock()
        self.fail_puts = 0

    def put(self, key_id: str, device: str, entry: InboxEntry) -> None:
        if self.fail_puts:
            self.fail_puts -= 1
            raise RuntimeError("injected PutItem failure")
        with self.lock:
            self.boxes.setdefault((key_id, device), {})[entry.event_id] = entry

    def entries(self, key_id: str, device: str) -> list[InboxEntry]:
        box = self.boxes.get((key_id, device), {})
        return [box[k] for k in sorted(box)]

    def remove(self, key_id: str, device: str, event_ids: list[str]) -> int:
        with self.lock:
            box = self.boxes.get((key_id, device), {})
            return sum(1 for e in event_ids if box.pop(e, None) is not None)


class MemoryDevices:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Device] = {}
        self.conns: dict[str, tuple[str, str, float]] = {}
        self.lock = threading.Lock()

    def _get(self, key_id: str, device: str) -> Device:
        return self.items.get((key_id, device)) or Device(key_id=key_id, name=device)

    def _put(self, device: Device) -> None:
        self.items[device.key_id, device.name] = device

    def devices(self, key_id: str) -> list[Device]:
        return [d for (k, _), d in sorted(self.items.items()) if k == key_id]

    def get(self, key_id: str, device: str) -> Device | None:
        return self.items.get((key_id, device))

    def seen(self, key_id: str, device: str, now: float, handed_out: list[str]) -> int:
        with self.lock:
            cur = self._get(key_id, device)
            self._put(replace(cur, seen_at=now, dropped=0, sent=cur.sent | frozenset(handed_out)))
            return cur.dropped

    def add_dropped(self, key_id: str, device: str, count: int) -> None:
        with self.lock:
            cur = self._get(key_id, device)
            self._put(replace(cur, dropped=cur.dropped + count))

    def forget_sent(self, key_id: str, device: str, event_ids: list[str]) -> None:
        with self.lock:
            cur = self._get(key_id, device)
            self._put(replace(cur, sent=cur.sent - frozenset(event_ids)))

    def register(self, key_id: str, device: str, connection_id: str, now: float, replacing: str | None) -> bool:
        with self.lock:
            cur = self._get(key_id, device)
            if cur.connection_id != replacing:
                return False
            self._put(
                replace(
                    cur,
                    connection_id=connection_id,
                    connected_at=now,
                    seen_at=now,
                    ready=False,
                    sent=frozenset(),
                    lease_until=None,
                )
            )
            return True

    def set_ready(self, key_id: str, device: str, connection_id: str) -> int | None:
        with self.lock:
            cur = self._get(key_id, device)
            if cur.connection_id != connection_id:
                return None
            self._put(replace(cur, ready=True, dropped=0))
            return cur.dropped

    def unregister(self, key_id: str, device: str, connection_id: str) -> None:
        with self.lock:
            cur = self._get(key_id, device)
            if cur.connection_id == connection_id:
                self._put(replace(cur, connection_id=None, connected_at=None, ready=False, lease_until=None))

    def acquire_drain(self, key_id: str, device: str, now: float, lease_s: float) -> Device | None:
        with self.lock:
            cur = self.items.get((key_id, device))
            if cur is None or not cur.connection_id or not cur.ready:
                return None
            if cur.lease_until is not None and cur.lease_until >= now:
                return None
            taken = replace(cur, lease_until=now + lease_s)
            self._put(taken)
            return taken

    def release_drain(self, key_id: str, device: str, connection_id: str, sent: list[str]) -> None:
        with self.lock:
            cur = self._get(key_id, device)
            if cur.connection_id == connection_id:
                self._put(replace(cur, lease_until=None, sent=cur.sent | frozenset(sent)))

    def save_connection(self, connection_id: str, key_id: str, device: str, check_at: float) -> None:
        self.conns[connection_id] = (key_id, device, check_at)

    def connection(self, connection_id: str) -> tuple[str, str] | None:
        found = self.conns.get(connection_id)
        return (found[0], found[1]) if found else None

    def forget_connection(self, connection_id: str) -> None:
        self.conns.pop(connection_id, None)

    def due_checks(self, now: float, limit: int = 100) -> list[tuple[str, str, str]]:
        return [(c, k, d) for c, (k, d, at) in self.conns.items() if at <= now][:limit]

    def checked(self, connection_id: str, next_check: float) -> None:
        if connection_id in self.conns:
            key_id, device, _ = self.conns[connection_id]
            self.conns[connection_id] = (key_id, device, next_check)


class MemoryWebhooks:
    def __init__(self) -> None:
        self.configs: dict[str, WebhookConfig] = {}
        self.tickets: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()

    def get(self, key_id: str) -> WebhookConfig | None:
        return self.configs.get(key_id)

    def _update(self, key_id: str, **changes: Any) -> WebhookConfig:
        with self.lock:
            cur = self.configs.get(key_id) or WebhookConfig(key_id=key_id)
            self.configs[key_id] = replace(cur, **changes)
            return self.configs[key_id]

    def create_secret(self, key_id: str, secret: str) -> WebhookConfig:
        cur = self.configs.get(key_id)
        return self._update(key_id, secret=cur.secret if cur and cur.secret else secret)

    def rotate(self, key_id: str, secret: str, previous_until: float) -> WebhookConfig:
        cur = self.configs[key_id]
        return self._update(key_id, secret=secret, previous_secret=cur.secret, previous_until=previous_until)

    def set_url(self, key_id: str, url: str | None) -> WebhookConfig:
        cur = self.configs.get(key_id) or WebhookConfig(key_id=key_id)
        return self._update(key_id, url=url, disabled=cur.disabled - {url} if url else cur.disabled)

    def disable(self, key_id: str, url: str) -> None:
        cur = self.configs.get(key_id) or WebhookConfig(key_id=key_id)
        self._update(key_id, disabled=cur.disabled | {url})

    def put_ticket(self, ticket_hash: str, key_hash: str, expires_at: float) -> None:
        self.tickets[ticket_hash] = (key_hash, expires_at)

    def take_ticket(self, ticket_hash: str, now: float) -> str | None:
        with self.lock:
            found = self.tickets.get(ticket_hash)
            if found is None or found[1] <= now:
                return None
            del self.tickets[ticket_hash]
            return found[0]


@dataclass
class FakeConnections:
    """Live connections and what each received; a connection not in `live` is gone (410)."""

    live: set[str] = field(default_factory=set)
    received: dict[str, list[str]] = field(default_factory=dict)
    fail_after: dict[str, int] = field(default_factory=dict)  # connection -> posts before it goes away

    def post(self, connection_id: str, data: str) -> None:
        left = self.fail_after.get(connection_id)
        if left is not None:
            if left <= 0:
                self.live.discard(connection_id)
            self.fail_after[connection_id] = left - 1
        if connection_id not in self.live:
            raise ConnectionGone(connection_id)
        self.received.setdefault(connection_id, []).append(data)

    def alive(self, connection_id: str) -> bool:
        return connection_id in self.live


@dataclass
class FakeWebhookQueue:
    sent: list[tuple[dict[str, Any], int]] = field(default_factory=list)

    def send(self, message: dict[str, Any], delay_s: int = 0) -> None:
        self.sent.append((dict(message), delay_s))


@dataclass
class FakeResolver:
    table: dict[str, list[str]] = field(default_factory=dict)

    def resolve(self, host: str, port: int) -> list[str]:
        return list(self.table.get(host, []))


@dataclass
class FakeSender:
    """Answers with scripted statuses (200 when the script is empty) and records each request."""

    statuses: list[int | None] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def post(
        self, address: str, scheme: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
    ) -> HttpAnswer:
        self.requests.append({"address": address, "host": host, "path": path, "headers": headers, "body": body})
        status = self.statuses.pop(0) if self.statuses else 200
        return HttpAnswer(status, None if status else "timed out")


def memory_delivery(jobs: Any) -> DeliveryPorts:
    return DeliveryPorts(
        job_events=MemoryJobEvents(jobs),
        inbox=MemoryInbox(),
        devices=MemoryDevices(),
        webhooks=MemoryWebhooks(),
        connections=FakeConnections(),
        webhook_queue=FakeWebhookQueue(),
        resolver=FakeResolver({"hooks.example.com": ["93.184.216.34"]}),
        sender=FakeSender(),
    )
