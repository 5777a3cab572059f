"""The delivery ports' contract: the same assertions on the in-memory fakes and on the real adapters (DynamoDB
and SQS on the moto server; the API Gateway management API as the local WebSocket server plays it)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from chalicelib.domain.events import event_id
from chalicelib.domain.inbox import InboxEntry
from chalicelib.domain.jobs import JobStatus
from chalicelib.domain.views import JobView
from chalicelib.domain.webhooks import WebhookDelivery, WebhookState
from tests.fakes import MemoryJobStore
from tests.fakes_delivery import FakeConnections, memory_delivery
from tests.integration.test_contracts import make_job
from tests.waiting import wait_for


@pytest.fixture(params=["memory", "dynamodb"])
def ports(request: pytest.FixtureRequest) -> Any:
    """(delivery ports, job store) of one kind."""
    if request.param == "memory":
        jobs = MemoryJobStore()
        return memory_delivery(jobs), jobs
    request.getfixturevalue("stack_env")
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    return deps.delivery, deps.jobs


def terminal_job(jobs: Any, job_id: str, key_id: str = "key_1") -> Any:
    job = make_job(job_id).model_copy(update={"key_id": key_id})
    jobs.create(job)
    running = jobs.transition(
        job, JobStatus.RUNNING, {"attempts": 1, "lease_until": time.time() + 5}, expected_attempts=0
    )
    return jobs.transition(running, JobStatus.SUCCEEDED, {"finished_at": time.time()}, expected_attempts=1)


def test_event_ids_are_allocated_once_per_job_and_marked_jobs_are_found(ports: Any) -> None:
    delivery, jobs = ports
    done = terminal_job(jobs, "e1")
    first = delivery.job_events.allocate(done)
    assert first == event_id(1) and delivery.job_events.allocate(done) == first  # a stale copy: same id
    assert jobs.get("e1").event_id == first
    assert delivery.job_events.allocate(terminal_job(jobs, "e2")) == event_id(3)  # the lost race used 2
    assert delivery.job_events.allocate(terminal_job(jobs, "e3", key_id="key_2")) == event_id(1)
    assert {j.id for j in delivery.job_events.unpublished(time.time() + 61)} == {"e1", "e2", "e3"}
    assert delivery.job_events.unpublished(time.time()) == []  # within the grace
    delivery.job_events.published("e1", ["phone"], WebhookDelivery(state=WebhookState.PENDING))
    delivery.job_events.set_webhook("e2", WebhookDelivery(state=WebhookState.DELIVERED, attempts=1, last_status=200))
    delivery.job_events.published("e2", [], WebhookDelivery(state=WebhookState.PENDING))  # never back to pending
    assert {j.id for j in delivery.job_events.unpublished(time.time() + 61)} == {"e3"}
    shown = JobView.of(jobs.get("e2")).model_dump(mode="json")["delivery"]
    assert shown == {
        "event_id": event_id(3),
        "webhook": {"state": "delivered", "attempts": 1, "last_status": 200, "error": None},
        "inbox": [],
    }
    assert JobView.of(jobs.get("e1")).model_dump(mode="json")["delivery"]["inbox"] == ["phone"]


def test_inbox_is_ordered_idempotent_and_removes_count_once(ports: Any) -> None:
    delivery, _ = ports
    inbox = delivery.inbox
    for n in (3, 1, 2, 2):
        inbox.put("k", "phone", InboxEntry(event_id(n), f'{{"n":{n}}}', 1e10))
    inbox.put("k", "tablet", InboxEntry(event_id(9), "{}", 1e10))
    assert [e.event_id for e in inbox.entries("k", "phone")] == [event_id(1), event_id(2), event_id(3)]
    assert inbox.entries("k", "phone")[0] == InboxEntry(event_id(1), '{"n":1}', 1e10)
    assert inbox.remove("k", "phone", [event_id(1), event_id(2), event_id(7)]) == 2
    assert inbox.remove("k", "phone", [event_id(1)]) == 0
    assert [e.event_id for e in inbox.entries("k", "phone")] == [event_id(3)]
    assert inbox.entries("other", "phone") == []


def test_device_registry_holds_one_connection_per_device(ports: Any) -> None:
    devices = ports[0].devices
    assert devices.get("k", "phone") is None and devices.seen("k", "phone", 100.0, [event_id(1)]) == 0
    devices.add_dropped("k", "phone", 3)
    assert devices.seen("k", "phone", 101.0, [event_id(2)]) == 3
    got = devices.get("k", "phone")
    assert got.seen_at == 101.0 and got.sent == {event_id(1), event_id(2)} and got.dropped == 0
    devices.forget_sent("k", "phone", [event_id(1)])
    assert devices.get("k", "phone").sent == {event_id(2)}
    assert devices.register("k", "phone", "c1", 200.0, None)
    assert not devices.register("k", "phone", "c2", 201.0, None)  # taken
    assert not devices.register("k", "phone", "c2", 201.0, "c0")  # not the one it expected
    assert devices.acquire_drain("k", "phone", 202.0, 30) is None  # not ready yet
    assert devices.set_ready("k", "phone", "c9") is None
    assert devices.set_ready("k", "phone", "c1") == 0
    held = devices.acquire_drain("k", "phone", 202.0, 30)
    assert held is not None and held.connection_id == "c1" and held.sent == frozenset()  # a new connection
    assert devices.acquire_drain("k", "phone", 203.0, 30) is None  # one pusher at a time
    devices.release_drain("k", "phone", "c1", [event_id(5)])
    assert devices.acquire_drain("k", "phone", 203.0, 30).sent == {event_id(5)}
    assert devices.acquire_drain("k", "phone", 240.0, 30) is not None  # an expired lease is taken over
    assert devices.register("k", "phone", "c2", 250.0, "c1")  # replaces a dead one
    devices.unregister("k", "phone", "c1")  # late: not its connection any more
    assert devices.get("k", "phone").connection_id == "c2"
    assert [d.name for d in devices.devices("k")] == ["phone"] and devices.devices("other") == []
    devices.unregister("k", "phone", "c2")
    assert devices.get("k", "phone").connection_id is None


def test_connection_records_and_their_checks(ports: Any) -> None:
    devices = ports[0].devices
    devices.save_connection("c1", "k", "phone", 100.0)
    devices.save_connection("c2", "k", "tablet", 500.0)
    assert devices.connection("c1") == ("k", "phone") and devices.connection("nope") is None
    assert devices.due_checks(200.0) == [("c1", "k", "phone")]
    devices.checked("c1", 900.0)
    assert devices.due_checks(200.0) == []
    devices.forget_connection("c2")
    assert devices.connection("c2") is None and devices.due_checks(1000.0) == [("c1", "k", "phone")]


def test_webhook_settings_secrets_and_single_use_tickets(ports: Any) -> None:
    store = ports[0].webhooks
    assert store.get("k") is None
    assert store.create_secret("k", "whsec_a").secret == "whsec_a"
    assert store.create_secret("k", "whsec_b").secret == "whsec_a"  # created once
    rotated = store.rotate("k", "whsec_c", 5000.0)
    assert (rotated.secret, rotated.previous_secret, rotated.previous_until) == ("whsec_c", "whsec_a", 5000.0)
    assert store.set_url("k", "https://a.example/h").url == "https://a.example/h"
    store.disable("k", "https://a.example/h")
    assert store.get("k").disabled == {"https://a.example/h"}
    assert store.set_url("k", "https://a.example/h").disabled == frozenset()  # set again: enabled
    assert store.set_url("k", None).url is None and store.get("k").secret == "whsec_c"
    store.put_ticket("t1", "hash1", 100.0)
    store.put_ticket("t2", "hash2", 100.0)
    assert store.take_ticket("t1", 99.0) == "hash1" and store.take_ticket("t1", 99.0) is None
    assert store.take_ticket("t2", 100.0) is None and store.take_ticket("nope", 1.0) is None


@pytest.fixture(params=["fake", "local-apigw"])
def connections(request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """(Connections, open(conn) -> a client socket) for the fake and for the adapter on the local server."""
    if request.param == "fake":
        fake = FakeConnections()

        def open_fake() -> tuple[str, Any]:
            fake.live.add("c1")
            return "c1", None

        yield fake, open_fake
        return
    from chalicelib.adapters.connections_apigw import ApiGatewayConnections
    from devtools.wsserver import LocalWebSocketApi

    registered: list[str] = []

    def on_connect(event: dict[str, Any], _: Any) -> dict[str, Any]:
        registered.append(event["requestContext"]["connectionId"])
        return {"statusCode": 200}

    server = LocalWebSocketApi(on_connect, lambda e, c: None, lambda e, c: None)
    server.start()
    clients = contextlib.ExitStack()

    def open_real() -> tuple[str, Any]:
        client = clients.enter_context(connect(server.url + "/?device=x"))
        # the handshake's end, as API Gateway sees it
        wait_for(lambda: registered[-1] in server.open, "the connection to be registered", 5)
        return registered[-1], client

    try:
        yield ApiGatewayConnections(server.management_url), open_real
    finally:
        clients.close()
        server.shutdown()


def test_connections_post_and_probe_and_say_410_for_a_gone_one(connections: tuple[Any, Any]) -> None:
    from chalicelib.services.delivery_ports import ConnectionGone

    adapter, open_connection = connections
    assert not adapter.alive("never-was")
    with pytest.raises(ConnectionGone):
        adapter.post("never-was", "{}")
    connection_id, client = open_connection()
    assert adapter.alive(connection_id)
    adapter.post(connection_id, json.dumps({"hello": "é"}))
    if client is not None:
        assert json.loads(client.recv(timeout=5)) == {"hello": "é"}
        client.close()
        wait_for(lambda: not adapter.alive(connection_id), "the closed connection to be gone", 5)
        with pytest.raises(ConnectionGone):
            adapter.post(connection_id, "{}")
