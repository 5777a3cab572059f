"""The job queue's contract, run against the in-memory fake and the SQS adapter on a moto server: what a
consumer of the tier queue (and its DLQ) receives after the platform's sends."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from chalicelib.domain.jobs import Job, JobSpec, JobStatus
from chalicelib.sandbox.models import SandboxLimits
from tests.fakes import MemoryQueue

LIMITS = SandboxLimits(wall_time_s=1, cpu_time_s=1, memory_mb=64, output_kb=8, processes=8)
Received = Callable[[str], list[dict[str, str]]]


def make_job(job_id: str, group: str = "key_1.0") -> Job:
    return Job(
        id=job_id,
        owner="acme",
        key_id="key_1",
        tier="free",
        status=JobStatus.QUEUED,
        spec=JobSpec(runtime="python3", limits=LIMITS),
        group=group,
        created_at=time.time(),
    )


def _sqs_receiver(deps: Any) -> Received:
    """Everything visible on a queue, as a consumer sees it (body plus the group it came in)."""

    def received(queue: str) -> list[dict[str, str]]:
        tier, _, dead = queue.partition("-")
        url = deps.queue.url(tier, bool(dead))
        out: list[dict[str, str]] = []
        while True:
            messages = deps.queue.client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            if not messages:
                return out
            for message in messages:
                body = json.loads(message["Body"])
                if not dead:
                    body["group"] = message["Attributes"]["MessageGroupId"]
                out.append(body)
                deps.queue.client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return received


@pytest.fixture(params=["memory", "sqs"])
def queue(request: pytest.FixtureRequest) -> tuple[Any, Received]:
    if request.param == "memory":
        fake = MemoryQueue()
        return fake, lambda name: fake.delivered.get(name, [])
    request.getfixturevalue("stack_env")
    from chalicelib.bootstrap import get_deps

    deps = get_deps()
    return deps.queue, _sqs_receiver(deps)


def test_a_job_is_delivered_once_per_deduplication_id_in_its_owners_group(queue: tuple[Any, Received]) -> None:
    q, received = queue
    a, b = make_job("a", group="key_1.0"), make_job("b", group="key_1.1")
    q.send(a)
    q.send(a)  # a re-drive within the deduplication window: dropped
    q.send(b)
    q.send(a, dedup_id="a#retry1")  # a new attempt's message
    got = received("free")
    assert [(m["job_id"], m["group"]) for m in got] == [("a", "key_1.0"), ("b", "key_1.1"), ("a", "key_1.0")]
    assert all(m["tier"] == "free" and m["key_id"] == "key_1" for m in got)


def test_the_dead_letter_hook_gets_each_job_once_with_its_reason(queue: tuple[Any, Received]) -> None:
    q, received = queue
    q.send_to_dlq("free", "a", "platform fault: sandbox unavailable")
    q.send_to_dlq("free", "a", "again")
    got = received("free-dlq")
    assert [(m["job_id"], m["reason"]) for m in got] == [("a", "platform fault: sandbox unavailable")]
    assert received("free") == []
