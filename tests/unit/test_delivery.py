"""Events, inboxes and the WebSocket channel on the in-memory fakes (DESIGN.md section 8)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.errors import CodeRunnerError
from chalicelib.domain.events import event_id
from chalicelib.domain.exits import GaveUp
from chalicelib.domain.jobs import JobStatus
from chalicelib.domain.views import JobView
from chalicelib.edge.errors import handshake_refusal
from chalicelib.services import channel, inbox, lifecycle
from chalicelib.services.keys import authenticate, create_key
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message

JOB = {"runtime": "python", "source": "print(1)"}


def run_job(deps: Any, key: str, **extra: Any) -> Any:
    job_id = submit_job(deps, key, {**JOB, **extra}).job.id
    handle_message(deps, {"job_id": job_id, "tier": "free"})
    return deps.jobs.get(job_id)


def connect(deps: Any, key: str, device: str, conn: str) -> dict[str, Any]:
    deps.delivery.connections.live.add(conn)
    return handshake(deps, conn, {"Authorization": f"Bearer {key}"}, {"device": device})


def handshake(deps: Any, conn: str, headers: dict[str, str], query: dict[str, str]) -> dict[str, Any]:
    """`$connect` as app.py answers it: 200, or the refusal rendered by the edge."""
    try:
        channel.connect(deps, conn, headers, query)
    except CodeRunnerError as exc:
        return handshake_refusal(exc)
    return {"statusCode": 200}


def received(deps: Any, conn: str, kind: str = "job.finished") -> list[dict[str, Any]]:
    messages = [json.loads(m) for m in deps.delivery.connections.received.get(conn, [])]
    return [m for m in messages if m.get("type") == kind]


@pytest.fixture
def pro(deps: Any) -> str:
    return create_key(deps, "acme", "pro")[0]


def key_id(deps: Any, key: str) -> str:
    return authenticate(deps, key).key_id


def test_each_terminal_job_produces_one_event_with_ids_increasing_per_key(deps: Any, key: str) -> None:
    other = create_key(deps, "globex", "free")[0]
    for k in (key, other):
        inbox.read(deps, key_id(deps, k), "phone")  # a device seen: the events have somewhere to go
    first, second = run_job(deps, key), run_job(deps, key)
    assert (first.event_id, second.event_id) == (event_id(1), event_id(2))
    assert run_job(deps, other).event_id == event_id(1)  # per key
    assert JobView.of(first).model_dump(mode="json")["delivery"] == {
        "event_id": event_id(1),
        "webhook": None,
        "inbox": ["phone"],
    }
    assert deps.delivery.job_events.unpublished(float("inf")) == []  # every marker cleared
    assert deps.metrics.count("EventsProduced") == 3


def test_an_event_with_nowhere_to_go_is_not_produced_and_leaves_no_marker(deps: Any, key: str) -> None:
    nowhere = run_job(deps, key)  # no callback, no webhook, no device: polling is the only way it is seen
    assert nowhere.status is JobStatus.SUCCEEDED and nowhere.event_id is None and nowhere.due_at is None
    assert JobView.of(nowhere).model_dump(mode="json")["delivery"] == {"event_id": None, "webhook": None, "inbox": []}
    assert deps.delivery.job_events.unpublished(float("inf")) == []
    assert "events_republished" not in reap(deps) and deps.metrics.count("EventsProduced") == 0
    inbox.read(deps, key_id(deps, key), "phone")
    assert run_job(deps, key).event_id == event_id(1)  # the next job with somewhere to go has an event


def test_cancelled_and_errored_jobs_produce_their_event_too(deps: Any, key: str) -> None:
    api_key = authenticate(deps, key)
    inbox.read(deps, key_id(deps, key), "phone")
    queued = submit_job(deps, key, JOB).job
    cancelled = lifecycle.cancel(deps, api_key, queued.id)
    assert deps.jobs.get(cancelled.id).event_id == event_id(1)
    errored = lifecycle.end_current(deps, submit_job(deps, key, JOB).job.id, GaveUp("gave up"))
    assert errored is not None and deps.jobs.get(errored.job.id).event_id == event_id(2)


def test_an_event_goes_to_the_named_device_or_to_every_recently_seen_one(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    for device in ("laptop", "phone"):
        inbox.read(deps, kid, device)  # reading an inbox makes a device known
    assert sorted(run_job(deps, key).inbox_devices) == ["laptop", "phone"]
    assert run_job(deps, key, device=" Tablet ").inbox_devices == ["tablet"]
    deps.clock.advance(24 * 3600 + 1)
    inbox.read(deps, kid, "phone")
    assert run_job(deps, key).inbox_devices == ["phone"]  # the laptop was not seen for a day


def test_the_inbox_keeps_the_newest_50_in_order_and_counts_the_dropped(deps: Any, pro: str) -> None:
    kid = key_id(deps, pro)
    inbox.read(deps, kid, "phone")
    ids = [run_job(deps, pro).event_id for _ in range(60)]
    got = inbox.read(deps, kid, "phone")
    assert [e["id"] for e in got["events"]] == ids[10:] and got["dropped"] == 10
    assert inbox.read(deps, kid, "phone")["dropped"] == 0  # since the last read


def test_events_expire_after_24_hours_even_before_ttl_deletes_them(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    inbox.read(deps, kid, "phone")
    run_job(deps, key)
    deps.clock.advance(24 * 3600 - 1)
    assert len(inbox.read(deps, kid, "phone")["events"]) == 1
    deps.clock.advance(2)
    assert inbox.read(deps, kid, "phone")["events"] == []


def test_a_crash_between_read_and_ack_loses_nothing_and_an_ack_removes_only_what_was_read(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    inbox.read(deps, kid, "phone")
    run_job(deps, key)
    run_job(deps, key)
    first = inbox.read(deps, kid, "phone")
    assert inbox.read(deps, kid, "phone")["events"] == first["events"]  # the client died: read again
    late = run_job(deps, key)  # arrives after the read
    assert inbox.ack(deps, kid, "phone", late.event_id) == 2  # through a later id: only the two handed out
    assert [e["id"] for e in inbox.read(deps, kid, "phone")["events"]] == [late.event_id]


def test_unknown_devices_are_empty_and_another_keys_inbox_is_never_visible(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    inbox.read(deps, kid, "phone")
    run_job(deps, key)
    other = key_id(deps, create_key(deps, "globex", "free")[0])
    assert inbox.read(deps, other, "phone") == {"device": "phone", "events": [], "dropped": 0}
    assert inbox.read(deps, kid, "never-seen")["events"] == []
    assert inbox.ack(deps, other, "phone", event_id(1)) == 0
    assert len(inbox.read(deps, kid, "phone")["events"]) == 1


def test_a_worker_that_dies_before_the_fan_out_loses_no_event(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    inbox.read(deps, kid, "phone")
    deps.delivery.inbox.fail_puts = 1  # the fan-out fails after the id was allocated
    job = run_job(deps, key)
    assert job.status is JobStatus.SUCCEEDED and job.inbox_devices is None and job.due_at is not None  # still marked
    assert reap(deps).get("events_republished") is None  # not before its grace
    deps.clock.advance(61)
    assert reap(deps)["events_republished"] == 1
    events = inbox.read(deps, kid, "phone")["events"]
    assert [e["id"] for e in events] == [event_id(1)] and events[0]["job"]["id"] == job.id  # the same id
    assert deps.jobs.get(job.id).inbox_devices == ["phone"] and not deps.delivery.job_events.unpublished(float("inf"))


# -- the WebSocket channel ---------------------------------------------------------------------------------


def test_connect_needs_a_key_or_a_ticket_and_never_a_key_in_the_url(deps: Any, key: str) -> None:
    assert handshake(deps, "c0", {}, {"device": "phone"})["statusCode"] == 401
    refused = handshake(deps, "c0", {}, {"device": "phone", "key": key})
    assert refused["statusCode"] == 401 and "URL" in json.loads(refused["body"])["error"]["message"]
    assert handshake(deps, "c0", {"authorization": f"Bearer {key}"}, {})["statusCode"] == 422  # no device
    ticket = channel.issue_ticket(deps, authenticate(deps, key))["ticket"]
    assert handshake(deps, "c1", {}, {"device": "phone", "ticket": ticket})["statusCode"] == 200
    assert handshake(deps, "c2", {}, {"device": "tab", "ticket": ticket})["statusCode"] == 401  # single use
    late = channel.issue_ticket(deps, authenticate(deps, key))["ticket"]
    deps.clock.advance(61)
    assert handshake(deps, "c3", {}, {"device": "tab", "ticket": late})["statusCode"] == 401  # a minute


def test_a_second_connection_for_a_live_device_is_refused_and_a_dead_one_is_replaced(deps: Any, key: str) -> None:
    assert connect(deps, key, "phone", "c1")["statusCode"] == 200
    deps.clock.advance(60)
    refused = connect(deps, key, "Phone", "c2")
    assert refused["statusCode"] == 409 and "already has a live connection" in refused["body"]
    deps.delivery.connections.live.discard("c1")  # dropped without a $disconnect: a probe answers 410
    assert connect(deps, key, "phone", "c3")["statusCode"] == 200
    assert deps.delivery.devices.get(key_id(deps, key), "phone").connection_id == "c3"
    channel.disconnect(deps, "c3")
    assert deps.delivery.devices.get(key_id(deps, key), "phone").connection_id is None
    assert connect(deps, key, "phone", "c4")["statusCode"] == 200


def test_a_connection_registered_moments_ago_counts_as_alive(deps: Any, key: str) -> None:
    connect(deps, key, "phone", "c1")
    deps.delivery.connections.live.discard("c1")  # its handshake is not finished: 410 until it is
    assert connect(deps, key, "phone", "c2")["statusCode"] == 409


def test_ready_drains_the_inbox_in_order_then_live_events_follow_and_ack_removes(deps: Any, key: str) -> None:
    kid = key_id(deps, key)
    connect(deps, key, "phone", "c1")
    offline = [run_job(deps, key).event_id for _ in range(3)]  # connected but not ready: inbox only
    assert received(deps, "c1") == []
    assert channel.message(deps, "c1", json.dumps({"action": "ready"})) == "ready"
    assert received(deps, "c1", "ready")[0]["dropped"] == 0
    live = run_job(deps, key).event_id
    assert [e["id"] for e in received(deps, "c1")] == offline + [live]
    channel.message(deps, "c1", json.dumps({"action": "ack", "through": offline[-1]}))
    assert received(deps, "c1", "acked")[0]["removed"] == 3
    assert [e.event_id for e in deps.delivery.inbox.entries(kid, "phone")] == [live]


def test_a_connection_lost_mid_drain_gets_everything_again_in_order_on_reconnect(deps: Any, key: str) -> None:
    connect(deps, key, "phone", "c1")
    channel.disconnect(deps, "c1")
    ids = [run_job(deps, key).event_id for _ in range(5)]
    connect(deps, key, "phone", "c2")
    deps.delivery.connections.fail_after["c2"] = 3  # the hello and two events, then the connection drops
    channel.message(deps, "c2", '{"action": "ready"}')
    assert [e["id"] for e in received(deps, "c2")] == ids[:2]
    assert deps.delivery.devices.get(key_id(deps, key), "phone").connection_id is None  # the 410 unregistered it
    connect(deps, key, "phone", "c3")
    channel.message(deps, "c3", '{"action": "ready"}')
    assert [e["id"] for e in received(deps, "c3")] == ids


def test_bad_messages_get_an_error_reply(deps: Any, key: str) -> None:
    connect(deps, key, "phone", "c1")
    assert channel.message(deps, "c1", "not json") == "error"
    assert channel.message(deps, "c1", '{"action": "ack", "through": "nope"}') == "error"
    assert channel.message(deps, "unknown", '{"action": "ready"}') == "error"


def test_the_sweep_forgets_connections_that_went_away_silently(deps: Any, key: str) -> None:
    connect(deps, key, "phone", "c1")
    connect(deps, key, "tablet", "c2")
    deps.delivery.connections.live.discard("c1")
    assert channel.sweep(deps) == 0  # not due yet
    deps.clock.advance(channel.CHECK_EVERY_S + 1)
    assert reap(deps)["connections_swept"] == 1
    kid = key_id(deps, key)
    assert deps.delivery.devices.get(kid, "phone").connection_id is None
    assert deps.delivery.devices.get(kid, "tablet").connection_id == "c2"
