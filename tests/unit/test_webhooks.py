"""Webhooks on the fakes: the SSRF check at submit and at delivery, signed attempts, backoff, 410, state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.views import JobView
from chalicelib.services import webhooks
from chalicelib.services.keys import authenticate
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message

URL = "https://hooks.example.com/code-runner?k=1"
JOB = {"runtime": "python", "source": "print(1)"}


def run_job(deps: Any, key: str, **extra: Any) -> Any:
    job_id = submit_job(deps, key, {**JOB, **extra}).job.id
    handle_message(deps, {"job_id": job_id, "tier": "free"})
    return deps.jobs.get(job_id)


def pump(deps: Any) -> list[str]:
    """Process every queued webhook message, advancing the clock by each one's delay (like SQS would)."""
    queue, outcomes = deps.delivery.webhook_queue, []
    while queue.sent:
        message, delay = queue.sent.pop(0)
        deps.clock.advance(delay)
        outcomes.append(webhooks.attempt(deps, message))
    return outcomes


def verify(deps: Any, key: str, request: dict[str, Any]) -> Any:
    secret = webhooks.show_secret(deps, authenticate(deps, key))["secret"]
    # standardwebhooks checks the timestamp against the real clock: verify at the attempt's own time.
    stamp = datetime.fromtimestamp(int(request["headers"]["webhook-timestamp"]), UTC)
    expected = Webhook(secret).sign(request["headers"]["webhook-id"], stamp, request["body"].decode())
    assert expected in request["headers"]["webhook-signature"].split(" ")
    return request["body"]


def test_a_job_with_a_callback_is_delivered_signed_and_its_state_shows_on_the_job(deps: Any, key: str) -> None:
    job = run_job(deps, key, callback_url=URL)
    assert JobView.of(job).model_dump(mode="json")["delivery"]["webhook"] == {
        "state": "pending",
        "attempts": 0,
        "last_status": None,
        "error": None,
    }
    assert pump(deps) == ["delivered"]
    (request,) = deps.delivery.sender.requests
    assert request["address"] == "93.184.216.34" and request["host"] == "hooks.example.com"
    assert request["path"] == "/code-runner?k=1" and request["headers"]["host"] == "hooks.example.com"
    assert request["headers"]["webhook-id"] == f"msg_{job.id}"
    body = verify(deps, key, request)
    assert b'"type":"job.finished"' in body and job.event_id.encode() in body
    state = JobView.of(deps.jobs.get(job.id)).model_dump(mode="json")["delivery"]["webhook"]
    assert state == {"state": "delivered", "attempts": 1, "last_status": 200, "error": None}


def test_the_keys_default_url_is_used_when_the_job_names_none(deps: Any, key: str) -> None:
    kid = authenticate(deps, key).key_id
    assert webhooks.set_default_url(deps, kid, URL) == {"url": URL}
    run_job(deps, key)
    assert pump(deps) == ["delivered"]
    webhooks.set_default_url(deps, kid, None)
    run_job(deps, key)
    assert deps.delivery.webhook_queue.sent == []


def test_failures_retry_with_backoff_each_attempt_signed_afresh_then_give_up(deps: Any, key: str) -> None:
    deps.delivery.sender.statuses = [500, None, 503, 302, 500]
    start = deps.clock.now()
    job = run_job(deps, key, callback_url=URL)
    outcomes = pump(deps)
    assert outcomes.count("retry") == 4 and outcomes[-1] == "failed" and outcomes.count("deferred") == 2  # 2400 s
    requests = deps.delivery.sender.requests
    assert len(requests) == 5
    stamps = [int(r["headers"]["webhook-timestamp"]) for r in requests]
    assert [b - a for a, b in zip(stamps, stamps[1:], strict=False)] == [60, 300, 900, 2400]
    assert 3300 <= deps.clock.now() - start <= 3900
    assert {r["headers"]["webhook-id"] for r in requests} == {f"msg_{job.id}"}
    for request in requests:
        verify(deps, key, request)
    state = deps.jobs.get(job.id).webhook_delivery
    assert (state.state.value, state.attempts, state.last_status) == ("failed", 5, 500)


def test_a_410_disables_the_url_for_the_key_until_it_is_set_again(deps: Any, key: str) -> None:
    kid = authenticate(deps, key).key_id
    deps.delivery.sender.statuses = [410]
    job = run_job(deps, key, callback_url=URL)
    assert pump(deps) == ["gone"]
    assert deps.jobs.get(job.id).webhook_delivery.last_status == 410
    second = run_job(deps, key, callback_url=URL)
    assert deps.delivery.webhook_queue.sent == [] and "410" in second.webhook_delivery.error
    webhooks.set_default_url(deps, kid, URL)  # the owner says it is back
    run_job(deps, key, callback_url=URL)
    assert pump(deps) == ["delivered"]


def test_a_callback_resolving_to_a_forbidden_address_is_a_422_at_submit(deps: Any, key: str) -> None:
    deps.delivery.resolver.table["internal.example.com"] = ["93.184.216.34", "10.0.0.5"]
    for url in ("https://internal.example.com/x", "https://169.254.169.254/latest", "http://hooks.example.com/"):
        with pytest.raises(ValidationFailed) as err:
            submit_job(deps, key, {**JOB, "callback_url": url})
        assert err.value.details[0]["field"] == "callback_url", url
    assert authenticate(deps, key).quota.m_n == 0  # a refused submit consumes nothing


def test_the_target_is_checked_again_at_delivery_against_dns_rebinding(deps: Any, key: str) -> None:
    job = run_job(deps, key, callback_url=URL)
    deps.delivery.resolver.table["hooks.example.com"] = ["127.0.0.1"]  # the name now points inside
    assert pump(deps) == ["refused"]
    assert deps.delivery.sender.requests == []
    state = deps.jobs.get(job.id).webhook_delivery
    assert state.state.value == "failed" and "loopback" in state.error


def test_rotation_signs_with_both_secrets_for_a_day(deps: Any, key: str) -> None:
    api_key = authenticate(deps, key)
    old = webhooks.show_secret(deps, api_key)["secret"]
    rotated = webhooks.rotate_secret(deps, api_key)
    assert rotated["secret"] != old and rotated["previous_secret_valid_until"] == deps.clock.now() + 86400
    run_job(deps, key, callback_url=URL)
    pump(deps)
    deps.clock.advance(86400)
    run_job(deps, key, callback_url=URL)
    pump(deps)
    first, second = deps.delivery.sender.requests
    assert first["headers"]["webhook-signature"].count("v1,") == 2
    assert second["headers"]["webhook-signature"].count("v1,") == 1
    assert webhooks.show_secret(deps, api_key) == {"secret": rotated["secret"], "previous_secret_valid_until": None}


def test_a_default_url_is_checked_when_it_is_set(deps: Any, key: str) -> None:
    kid = authenticate(deps, key).key_id
    with pytest.raises(ValidationFailed) as err:
        webhooks.set_default_url(deps, kid, "https://[::1]/hook")
    assert err.value.details[0]["field"] == "url"
    with pytest.raises(ValidationFailed):
        webhooks.set_default_url(deps, kid, 5)
