"""Result delivery over the real local stack: a device that was offline for 60 finished jobs reconnects and
gets exactly the newest 50, oldest first, then live events (DESIGN.md section 8)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.e2e.stackproc import Api, StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]

FAST = {"runtime": "bash", "source": "true"}


def open_device(api: Api, ws_url: str, device: str) -> ClientConnection:
    return connect(f"{ws_url}/?device={device}", additional_headers={"Authorization": f"Bearer {api.key}"})


def next_of(ws: ClientConnection, kind: str, timeout: float = 30) -> dict[str, Any]:
    """The next message of type `kind` (others, e.g. acks, are skipped); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("type") == kind:
            return dict(message)


def wait_published(api: Api, job_ids: list[str], timeout: float = 120) -> dict[str, str]:
    """Job id -> event id once every job is terminal and its event was produced."""
    deadline, events = time.monotonic() + timeout, {}
    for job_id in job_ids:
        while True:
            job = api.wait(job_id, timeout=max(1, deadline - time.monotonic()))
            if job["delivery"] is not None:
                events[job_id] = job["delivery"]["event_id"]
                break
            assert time.monotonic() < deadline, f"the event of {job_id} was never produced"
            time.sleep(0.2)
    return events


def test_a_device_back_after_60_jobs_gets_the_newest_50_in_order_then_live_events(stack: StackProcess) -> None:
    api = stack.api(stack.make_key("enterprise"))
    ws_url = api.call("GET", "/health").body["websocket"]
    assert ws_url.startswith("ws://127.0.0.1:")
    with open_device(api, ws_url, "Phone") as ws:  # the device is known from now on
        ws.send(json.dumps({"action": "ready"}))
        assert next_of(ws, "ready")["device"] == "phone"
    job_ids: list[str] = []
    for _ in range(3):
        batch = api.call("POST", "/v1/jobs/batch", {"jobs": [FAST] * 20})
        assert batch.status == 202, batch.body
        job_ids += [r["job"]["id"] for r in batch.body["results"]]
    events = wait_published(api, job_ids)
    newest = sorted(events.values())[-50:]

    with open_device(api, ws_url, "phone") as ws:
        with pytest.raises(InvalidStatus) as refused:  # one live connection per device
            open_device(api, ws_url, "PHONE")
        assert refused.value.response.status_code == 409
        ws.send(json.dumps({"action": "ready"}))
        assert next_of(ws, "ready")["dropped"] == 10
        drained = [next_of(ws, "job.finished") for _ in range(50)]
        assert [e["id"] for e in drained] == newest  # exactly the newest 50, oldest first
        assert {e["job"]["id"] for e in drained} <= set(job_ids)
        ws.send(json.dumps({"action": "ack", "through": newest[-1]}))
        assert next_of(ws, "acked")["removed"] == 50
        live_job = api.submit_ok(FAST)
        live = next_of(ws, "job.finished")
        assert live["job"]["id"] == live_job and live["id"] > newest[-1]
    inbox = api.call("GET", "/v1/events?device=phone").body
    assert [e["id"] for e in inbox["events"]] == [live["id"]]  # pushed but not acked: still waiting
