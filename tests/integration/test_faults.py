"""Injected AWS faults (throttling, races, failed writes) on the submit and worker paths, on a moto server.

Faults are injected with a botocore `before-call` hook on the shared clients: the call is answered with the
error instead of reaching moto, as if botocore's own retries had been exhausted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.adapters.aws import client as aws_client
from chalicelib.bootstrap import get_deps
from chalicelib.domain.jobs import JobStatus
from tests.integration.helpers import body, drain, new_key

JOB = {"runtime": "bash", "source": "echo ok"}


class _Http:
    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


class Faults:
    """Fail the next `times` calls of `operation` (optionally only those naming `table`) with `code`."""

    def __init__(self) -> None:
        self._armed: list[dict[str, Any]] = []
        self.hits: list[str] = []
        self._lock = threading.Lock()

    def fail(self, service: str, operation: str, code: str, times: int = 1, table: str | None = None) -> None:
        self._armed.append({"service": service, "op": operation, "code": code, "left": times, "table": table})

    def hook(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        raw = params.get("body") or b""
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        with self._lock:
            for fault in self._armed:
                if fault["op"] != model.name or fault["left"] <= 0:
                    continue
                if fault["table"] and f'"{fault["table"]}"' not in text:
                    continue
                fault["left"] -= 1
                self.hits.append(f"{model.name}:{fault['code']}")
                status = 400 if fault["code"] != "ServiceUnavailable" else 503
                error = {"Error": {"Code": fault["code"], "Message": "injected"}, "ResponseMetadata": {}}
                return _Http(status), error
        return None


@pytest.fixture
def faults(stack_env: dict[str, Any]) -> Iterator[Faults]:
    injected = Faults()
    for service in ("dynamodb", "sqs"):
        aws_client(service).meta.events.register(f"before-call.{service}", injected.hook)
    yield injected
    for service in ("dynamodb", "sqs"):
        aws_client(service).meta.events.unregister(f"before-call.{service}", injected.hook)


@pytest.fixture
def client(stack_env: dict[str, Any]) -> Iterator[Any]:
    from app import app

    with Client(app) as c:
        yield c


def table(stack_env: dict[str, Any], name: str) -> str:
    return f"code-runner-{stack_env['stage']}-{name}"


def submit(client: Any, key: str) -> Any:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return client.http.post("/v1/jobs", headers=headers, body=json.dumps(JOB))


def minute_used(client: Any, key: str) -> int:
    usage = body(client.http.get("/v1/usage", headers={"Authorization": f"Bearer {key}"}))
    return int(usage["per_minute"]["used"])


@pytest.mark.parametrize(
    ("operation", "code", "which"),
    [
        ("UpdateItem", "ProvisionedThroughputExceededException", "keys"),  # auth + quota
        ("UpdateItem", "ThrottlingException", "counters"),  # tier queue place
        ("PutItem", "InternalServerError", "jobs"),  # the job record
    ],
)
def test_a_throttled_submit_is_503_json_and_consumes_nothing(
    client: Any, faults: Faults, stack_env: dict[str, Any], operation: str, code: str, which: str
) -> None:
    key = new_key()
    faults.fail("dynamodb", operation, code, table=table(stack_env, which))
    resp = submit(client, key)
    assert faults.hits == [f"{operation}:{code}"]
    assert resp.status_code == 503, resp.body
    assert body(resp)["error"]["code"] == "service_unavailable" and resp.headers["Retry-After"] == "1"
    assert minute_used(client, key) == 0
    queue = body(client.http.get("/v1/queue", headers={"Authorization": f"Bearer {key}"}))
    assert queue["tiers"]["free"]["queued"] == 0
    assert submit(client, key).status_code == 202  # and the next try goes through


def test_throttled_start_keeps_the_message_and_the_slot_free(faults: Faults, stack_env: dict[str, Any]) -> None:
    deps = get_deps()
    key = new_key()
    from chalicelib.services.submit import submit_job

    job = submit_job(deps, key, JOB).job
    faults.fail("dynamodb", "UpdateItem", "ThrottlingException", table=table(stack_env, "jobs"))
    failed = _deliver_once(deps, "free")
    assert failed == 1  # reported in batchItemFailures: the message stays, nothing is lost
    assert deps.jobs.get(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert deps.counters.holders_of(job.key_id) == set()
    # The message comes back (here at once, in the cloud after its visibility timeout) and runs normally.
    drain("free")
    done = deps.jobs.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.attempts == 1


def test_a_lost_start_race_runs_nothing_and_frees_the_slot(stack_env: dict[str, Any]) -> None:
    """Two deliveries of one message handled at the same moment: one run, one acknowledged skip."""
    from chalicelib.services.submit import submit_job
    from chalicelib.services.worker import handle_message

    deps = get_deps()
    job = submit_job(deps, new_key("pro"), {"runtime": "bash", "source": "sleep 0.3; echo once"}).job
    message = {"job_id": job.id, "tier": "pro"}
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def deliver() -> None:
        barrier.wait()
        outcomes.append(handle_message(deps, message))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("succeeded") == 1, outcomes
    assert all(o in {"succeeded", "lost-race", "skipped:running", "skipped:succeeded"} for o in outcomes)
    assert deps.counters.holders_of(job.key_id) == set()
    done = deps.jobs.get(job.id)
    assert done is not None and done.result is not None and done.result.stdout == "once\n" and done.attempts == 1


def _deliver_once(deps: Any, tier: str) -> int:
    """One batch through the worker; failed messages are made visible again at once. Returns how many failed."""
    from chalicelib.services.batch import process_jobs
    from devtools.worker import lambda_sqs_record

    sqs = aws_client("sqs")
    url = deps.queue.url(tier)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"])
    records = [lambda_sqs_record(m, arn) for m in messages.get("Messages", [])]
    failed = {f["itemIdentifier"] for f in process_jobs(deps, {"Records": records})["batchItemFailures"]}
    for record in records:
        if record["messageId"] in failed:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0)
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])
    return len(failed)
