"""JobQueue on SQS FIFO: one queue (and DLQ) per tier. The message group is one of the key's slots, not the
whole queue, so one user's burst never blocks another user, and up to `concurrency` of a key's jobs can be
in flight at once while each group stays in order."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.adapters.aws import LazyClient
from chalicelib.domain.jobs import Job


class SqsJobQueue:
    def __init__(self, queue_name: Callable[[str, bool], str], client: Any = None) -> None:
        self._queue_name = queue_name
        self._client = client
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    client = LazyClient("sqs")

    def url(self, tier: str, dead_letter: bool = False) -> str:
        """The queue URL, looked up once per process."""
        name = self._queue_name(tier, dead_letter)
        if name not in self._urls:
            with self._lock:
                self._urls[name] = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        return self._urls[name]

    def send(self, job: Job, dedup_id: str | None = None) -> None:
        self.client.send_message(
            QueueUrl=self.url(job.tier),
            MessageBody=json.dumps({"job_id": job.id, "tier": job.tier, "key_id": job.key_id}),
            MessageGroupId=job.group or job.key_id,
            MessageDeduplicationId=dedup_id or job.id,
        )

    def send_to_dlq(self, tier: str, job_id: str, reason: str) -> None:
        self.client.send_message(
            QueueUrl=self.url(tier, dead_letter=True),
            MessageBody=json.dumps({"job_id": job_id, "tier": tier, "reason": reason}),
            MessageGroupId=job_id,
            MessageDeduplicationId=f"{job_id}-dlq",
        )

    def delay(self, receipt_handle: str, tier: str, seconds: int) -> None:
        self.client.change_message_visibility(
            QueueUrl=self.url(tier), ReceiptHandle=receipt_handle, VisibilityTimeout=max(0, min(seconds, 43200))
        )
