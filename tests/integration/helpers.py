"""Helpers for driving the app in-process against the moto server."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.aws import client
from chalicelib.bootstrap import get_deps
from chalicelib.services.batch import process_dead_letters, process_jobs
from devtools.worker import lambda_sqs_record


def drain(tier: str = "free", dead_letter: bool = False, rounds: int = 20) -> list[dict[str, Any]]:
    """Receive and process a tier queue's messages like the worker loop does; returns the batch responses."""
    deps = get_deps()
    url = deps.queue.url(tier, dead_letter)  # type: ignore[attr-defined]
    sqs = client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    responses = []
    for _ in range(rounds):
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            break
        event = {"Records": [lambda_sqs_record(m, arn) for m in messages]}
        handler = process_dead_letters if dead_letter else process_jobs
        response = handler(deps, event)
        responses.append(response)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=record["receiptHandle"])
    return responses


def new_key(tier: str = "free", owner: str = "acme") -> str:
    from chalicelib.services.keys import create_key

    return create_key(get_deps(), owner, tier)[0]


def body(response: Any) -> Any:
    return json.loads(response.body)
