"""Result delivery through the HTTP API and the queues on the moto server: a signed webhook to a loopback
receiver (verified with `standardwebhooks` and with the README's snippet), the inbox routes, the secret
routes, the WebSocket handlers with API Gateway's event shapes, and the fan-out's AWS request count."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client
from standardwebhooks.webhooks import Webhook

from tests.bench import RequestCounter
from tests.integration.helpers import body, drain, new_key

ROOT = Path(__file__).resolve().parents[2]
JOB = {"runtime": "bash", "source": "echo hi"}


class Receiver(ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that records each POST and answers `status`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hook)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 204

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Hook(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append(({k.lower(): v for k, v in self.headers.items()}, raw))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def client(stack_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    from chalicelib import bootstrap

    monkeypatch.setenv("CODERUNNER_WEBHOOK_ALLOW_LOOPBACK", "true")  # what the local stage does
    bootstrap.reset()
    from app import app

    with Client(app) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def drain_webhooks() -> list[dict[str, Any]]:
    """Receive the webhook queue's visible messages and run them through the consumer, like Lambda."""
    from chalicelib.adapters.aws import client
    from chalicelib.bootstrap import get_deps
    from chalicelib.services.webhooks import process_webhooks
    from devtools.worker import lambda_sqs_record

    deps = get_deps()
    url = deps.delivery.webhook_queue.url  # type: ignore[union-attr]
    sqs = client("sqs")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    event = {"Records": [lambda_sqs_record(m, "arn:aws:sqs:us-east-1:123456789012:webhooks") for m in messages]}
    response = process_webhooks(deps, event)
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return [json.loads(m["Body"]) for m in messages] + [response]


def readme_verify() -> Any:
    """The verification snippet of the README's "Receiving results", executed as a user would paste it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Receiving results") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # noqa: S102 - our own README
    return namespace["verify"]


def test_a_callback_gets_one_signed_post_that_both_verifiers_accept(client: Any, receiver: Receiver) -> None:
    key = new_key("pro")
    resp = client.http.post("/v1/jobs", headers=auth(key), body=json.dumps({**JOB, "callback_url": receiver.url}))
    assert resp.status_code == 202, resp.body
    job_id = body(resp)["id"]
    drain("pro")
    assert body(client.http.get(f"/v1/jobs/{job_id}", headers=auth(key)))["delivery"]["webhook"]["state"] == "pending"
    drain_webhooks()
    (headers, raw), *rest = receiver.requests
    assert rest == []
    secret = body(client.http.get("/v1/webhook-secret", headers=auth(key)))["secret"]
    event = Webhook(secret).verify(raw, headers)
    assert (
        event["type"] == "job.finished" and event["job"]["id"] == job_id and event["job"]["result"]["stdout"] == "hi\n"
    )
    assert readme_verify()(secret, headers, raw) is True
    assert readme_verify()(secret, {**headers, "webhook-id": "msg_other"}, raw) is False
    job = body(client.http.get(f"/v1/jobs/{job_id}", headers=auth(key)))
    assert job["delivery"] == {
        "event_id": event["id"],
        "webhook": {"state": "delivered", "attempts": 1, "last_status": 204, "error": None},
        "inbox": [],
    }


def test_a_failed_attempt_is_rescheduled_with_a_delay_and_410_disables(client: Any, receiver: Receiver) -> None:
    key = new_key("pro")
    receiver.status = 500
    client.http.post("/v1/jobs", headers=auth(key), body=json.dumps({**JOB, "callback_url": receiver.url}))
    drain("pro")
    drain_webhooks()
    assert len(receiver.requests) == 1 and drain_webhooks()[:-1] == []  # the next attempt waits 60 s in SQS
    receiver.status = 410
    put = client.http.put("/v1/webhook", headers=auth(key), body=json.dumps({"url": receiver.url}))
    assert put.status_code == 200 and body(put) == {"url": receiver.url}
    client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(JOB))  # the key's default URL
    drain("pro")
    drain_webhooks()
    assert len(receiver.requests) == 2
    third = body(client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(JOB)))
    drain("pro")
    assert (
        body(client.http.get(f"/v1/jobs/{third['id']}", headers=auth(key)))["delivery"]["webhook"]["state"] == "failed"
    )


@pytest.mark.parametrize(
    "url", ["https://10.0.0.1/x", "https://169.254.169.254/latest/meta-data", "https://[::ffff:10.0.0.1]/", "ftp://x"]
)
def test_a_forbidden_callback_is_a_422_naming_the_field(client: Any, url: str) -> None:
    key = new_key()
    resp = client.http.post("/v1/jobs", headers=auth(key), body=json.dumps({**JOB, "callback_url": url}))
    assert resp.status_code == 422, resp.body
    assert body(resp)["error"]["details"][0]["field"] == "callback_url"


def test_inbox_routes_read_without_removing_and_ack_removes(client: Any) -> None:
    key, other = new_key("pro"), new_key("pro", owner="globex")
    empty = client.http.get("/v1/events?device=Phone", headers=auth(key))
    assert empty.status_code == 200 and body(empty) == {"device": "phone", "events": [], "dropped": 0}
    client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(JOB))
    drain("pro")
    first = body(client.http.get("/v1/events?device=phone&wait=1", headers=auth(key)))
    assert (
        len(first["events"]) == 1
        and first["events"] == body(client.http.get("/v1/events?device=phone", headers=auth(key)))["events"]
    )
    assert body(client.http.get("/v1/events?device=phone", headers=auth(other)))["events"] == []
    ack = {"device": "phone", "through": first["events"][0]["id"]}
    assert body(client.http.post("/v1/events/ack", headers=auth(other), body=json.dumps(ack)))["removed"] == 0
    assert body(client.http.post("/v1/events/ack", headers=auth(key), body=json.dumps(ack)))["removed"] == 1
    assert body(client.http.get("/v1/events?device=phone", headers=auth(key)))["events"] == []
    bad = client.http.post("/v1/events/ack", headers=auth(key), body=json.dumps({"device": "phone", "through": 1}))
    assert bad.status_code == 422
    assert client.http.get("/v1/events?device=a%20b", headers=auth(key)).status_code == 422
    assert client.http.get("/v1/events?device=phone&wait=99", headers=auth(key)).status_code == 422
    assert client.http.get("/v1/events?device=phone").status_code == 401


def test_secret_routes_and_tickets(client: Any) -> None:
    key = new_key()
    first = body(client.http.get("/v1/webhook-secret", headers=auth(key)))
    assert first["secret"].startswith("whsec_") and first["previous_secret_valid_until"] is None
    assert body(client.http.get("/v1/webhook-secret", headers=auth(key))) == first
    rotated = body(client.http.post("/v1/webhook-secret/rotate", headers=auth(key), body="{}"))
    assert rotated["secret"] != first["secret"] and rotated["previous_secret_valid_until"] > 0
    ticket = body(client.http.post("/v1/ws-tickets", headers=auth(key), body="{}"))
    assert ticket["ticket"].startswith("wst_") and ticket["expires_in"] == 60
    assert client.http.put("/v1/webhook", headers=auth(key), body=json.dumps({"nope": 1})).status_code == 422


def test_websocket_handlers_take_api_gateways_events(client: Any) -> None:
    import app
    from devtools.wsserver import connect_event, disconnect_event

    key = new_key()
    hello = connect_event("c1", "/?device=Laptop", {"Authorization": f"Bearer {key}"}, 1)
    assert app.websocket_connect(hello, None) == {"statusCode": 200}
    again = app.websocket_connect(connect_event("c2", "/?device=laptop", {"Authorization": f"Bearer {key}"}, 1), None)
    assert again["statusCode"] == 409 and json.loads(again["body"])["error"]["code"] == "conflict"
    assert app.websocket_connect(connect_event("c3", f"/?device=x&key={key}", {}, 1), None)["statusCode"] == 401
    app.websocket_disconnect(disconnect_event("c1", 1), None)
    assert (
        app.websocket_connect(connect_event("c4", "/?device=laptop", {"authorization": f"Bearer {key}"}, 1), None)[
            "statusCode"
        ]
        == 200
    )


def test_the_fan_out_of_one_job_stays_within_its_request_budget(client: Any) -> None:
    from chalicelib.adapters.aws import client as aws_client
    from chalicelib.bootstrap import get_deps
    from chalicelib.services import inbox
    from chalicelib.services.delivery import publish
    from chalicelib.services.keys import authenticate

    key = new_key("pro")
    deps = get_deps()
    api_key = authenticate(deps, key)
    inbox.read(deps, api_key.key_id, "phone")  # one known device, offline
    job_id = body(client.http.post("/v1/jobs", headers=auth(key), body=json.dumps(JOB)))["id"]
    wired, deps.delivery = deps.delivery, None
    try:
        drain("pro")  # the job finishes; its fan-out is left to us
    finally:
        deps.delivery = wired
    done = deps.jobs.get(job_id)
    assert done.event_id is None and [j.id for j in wired.job_events.unpublished(done.finished_at + 61)] == [job_id]
    with RequestCounter(aws_client("dynamodb"), aws_client("sqs")) as counter:
        publish(deps, done)
    # counter + claim + config + devices + (put + cap query + refused drain lease) + marker: see delivery.py
    assert counter.total <= 8, counter.by_operation()
    assert deps.jobs.get(job_id).inbox_devices == ["phone"]
