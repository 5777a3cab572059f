"""Delivery's pure rules: the event, the inbox, signatures and the SSRF guard (no I/O at all)."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chalicelib.domain import webhooks as wh
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.events import build_event, event_id, truncate_utf8
from chalicelib.domain.inbox import InboxEntry, acknowledged, normalize_device, over_cap
from chalicelib.domain.jobs import Job, JobSpec, JobStatus
from chalicelib.domain.ssrf import TargetRefused, address_problem, check_addresses, parse_target
from chalicelib.sandbox.models import ExecutionResult, SandboxLimits
from chalicelib.services.webhooks import new_secret

LIMITS = SandboxLimits(wall_time_s=1, cpu_time_s=1, memory_mb=64, output_kb=8, processes=8)


def test_event_ids_sort_as_strings_in_number_order() -> None:
    ids = [event_id(n) for n in (1, 2, 9, 10, 11, 100, 10**6)]
    assert sorted(ids) == ids and ids[0] == "evt_000000000001"


def test_output_is_cut_to_4_kib_on_a_character_boundary_with_flags() -> None:
    assert truncate_utf8("abc") == ("abc", False)
    text, cut = truncate_utf8("é" * 3000)  # 6000 bytes, 2 per character
    assert cut and len(text.encode()) <= 4096 and text == "é" * 2048
    job = Job(
        id="j1",
        owner="o",
        key_id="k",
        tier="free",
        status=JobStatus.SUCCEEDED,
        spec=JobSpec(runtime="python3", limits=LIMITS),
        created_at=1.0,
        finished_at=2.0,
        result=ExecutionResult(exit_code=0, stdout="x" * 5000, stderr="short", stderr_truncated=True),
    )
    event = build_event(job, event_id(7)).model_dump()
    result = event["job"]["result"]
    assert len(result["stdout"]) == 4096 and result["stdout_truncated"] is True
    assert result["stderr"] == "short" and result["stderr_truncated"] is True  # already cut by the sandbox
    assert (
        event["id"] == "evt_000000000007" and event["type"] == "job.finished" and event["job"]["status"] == "succeeded"
    )
    assert build_event(job, event_id(7)).body() == build_event(job, event_id(7)).body()  # re-published = same


@pytest.mark.parametrize(("raw", "name"), [("Laptop-1", "laptop-1"), ("  phone ", "phone"), ("a.b_c", "a.b_c")])
def test_device_names_are_trimmed_and_case_insensitive(raw: str, name: str) -> None:
    assert normalize_device(raw) == name


@pytest.mark.parametrize("raw", [None, "", "   ", "-x", "a b", "a/b", "x" * 65, "émoji", 5])
def test_bad_device_names_name_the_field(raw: object) -> None:
    with pytest.raises(ValidationFailed) as err:
        normalize_device(raw)
    assert err.value.details[0]["field"] == "device"


def test_the_cap_keeps_the_newest_and_expired_entries_do_not_count() -> None:
    now = 1000.0
    entries = [InboxEntry(event_id(n), "{}", now + 10) for n in range(1, 61)]
    assert [e.event_id for e in over_cap(entries, now)] == [event_id(n) for n in range(1, 11)]
    expired = [InboxEntry(event_id(n), "{}", now - 1) for n in range(61, 71)]
    assert len(over_cap(entries[:50] + expired, now)) == 0


def test_an_ack_removes_only_what_was_handed_out_up_to_its_id() -> None:
    sent = frozenset({event_id(1), event_id(3), event_id(5)})
    assert acknowledged(sent, event_id(3)) == [event_id(1), event_id(3)]  # 2 arrived after the read: kept


def test_signatures_verify_with_the_standardwebhooks_library_during_a_rotation() -> None:
    old, new = new_secret(), new_secret()
    assert old.startswith("whsec_")
    body, msg_id, now = '{"id":"evt_000000000001"}', "msg_j1", int(time.time())
    headers = wh.headers([new, old], msg_id, now, body)
    assert headers["webhook-signature"].count("v1,") == 2
    assert Webhook(new).verify(body, headers) == {"id": "evt_000000000001"}
    assert Webhook(old).verify(body, headers)  # the old secret still verifies during the overlap
    assert wh.sign(new, msg_id, now, body) == Webhook(new).sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body + " ", headers)
    config = wh.WebhookConfig("k", secret=new, previous_secret=old, previous_until=now + 10)
    assert config.signing_secrets(now) == [new, old] and config.signing_secrets(now + 10) == [new]


def test_about_five_attempts_over_an_hour_in_hops_sqs_allows() -> None:
    assert wh.MAX_ATTEMPTS == 5
    assert 3300 <= sum(wh.wait_after(n) for n in range(1, wh.MAX_ATTEMPTS)) <= 3900
    assert [wh.outcome(500, n) for n in range(1, 6)] == [wh.Outcome.RETRY] * 4 + [wh.Outcome.FAILED]
    assert wh.outcome(204, 5) is wh.Outcome.DELIVERED and wh.outcome(410, 1) is wh.Outcome.GONE
    assert wh.outcome(302, 1) is wh.Outcome.RETRY and wh.outcome(None, 1) is wh.Outcome.RETRY  # never followed
    assert wh.hop(2400) == 900 and wh.hop(600.2) == 601 and wh.hop(0) == 0


FORBIDDEN = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("169.254.170.2", "metadata"),
    ("fd00:ec2::254", "metadata"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("192.0.2.1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("::ffff:127.0.0.1", "mapped loopback"),
    ("::ffff:169.254.169.254", "mapped metadata"),
    ("::ffff:10.0.0.1", "mapped private"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::10.0.0.1", "IPv4-compatible private"),
    ("2002:7f00:1::", "6to4 loopback"),
    ("2002:a9fe:a9fe::1", "6to4 metadata"),
    ("64:ff9b::7f00:1", "NAT64 loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 metadata"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("fec0::1", "site-local"),
    ("2001:db8::1", "documentation"),
]


@pytest.mark.parametrize(("address", "what"), FORBIDDEN)
def test_every_forbidden_address_form_is_refused(address: str, what: str) -> None:
    problem = address_problem(ipaddress.ip_address(address))
    assert problem is not None, f"{address} ({what}) was allowed"
    target = parse_target("https://hooks.example.com/x")
    with pytest.raises(TargetRefused, match="forbidden address"):
        check_addresses(target, ["93.184.216.34", address])  # ANY bad address of the host refuses it


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_only_with_the_local_stages_setting_and_http_only_there() -> None:
    local = parse_target("http://localhost:9000/hook", allow_loopback_http=True)
    assert str(check_addresses(local, ["127.0.0.1"], allow_loopback=True)) == "127.0.0.1"
    with pytest.raises(TargetRefused):
        check_addresses(local, ["127.0.0.1"])
    with pytest.raises(TargetRefused, match="https"):
        check_addresses(local, ["93.184.216.34"], allow_loopback=True)  # http never leaves the machine
    with pytest.raises(TargetRefused, match="https"):
        parse_target("http://example.com/")
    with pytest.raises(TargetRefused, match="does not resolve"):
        check_addresses(parse_target("https://nowhere.invalid/"), [])


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://u:p@example.com/", "credentials"),
        ("https://example.com:99999/", "valid"),
        ("file:///etc/passwd", "https"),
    ],
)
def test_malformed_targets_say_why(url: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=reason):
        parse_target(url)


def test_target_keeps_path_query_and_host_header() -> None:
    target = parse_target("https://Hooks.Example.com:8443/a/b?x=1#frag")
    assert (target.host, target.port, target.path, target.host_header) == (
        "hooks.example.com",
        8443,
        "/a/b?x=1",
        "hooks.example.com:8443",
    )
