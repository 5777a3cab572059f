"""WebhookQueue on SQS: a standard queue (FIFO queues refuse per-message delays, and a backed-off message
would hold up its whole group), with its own consumer function and DLQ (infra/resources.json)."""

from __future__ import annotations

import json
import threading
from typing import Any

from chalicelib.adapters.aws import LazyClient


class SqsWebhookQueue:
    def __init__(self, queue_name: str, client: Any = None) -> None:
        self.queue_name = queue_name
        self._client = client
        self._url: str | None = None
        self._lock = threading.Lock()

    client = LazyClient("sqs")

    @property
    def url(self) -> str:
        """The queue URL, looked up once per process."""
        if self._url is None:
            with self._lock:
                self._url = self.client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return str(self._url)

    def send(self, message: dict[str, object], delay_s: int = 0) -> None:
        self.client.send_message(
            QueueUrl=self.url, MessageBody=json.dumps(message), DelaySeconds=max(0, min(900, int(delay_s)))
        )
