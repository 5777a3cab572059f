"""Local worker loops: long-poll each tier queue (and its DLQ) and the webhook queue, and call the same batch
handlers Lambda calls.

Like Lambda's event source mapping, a message is deleted when the handler did not report it in
`batchItemFailures`; a reported one stays (its visibility was set by the handler for the backoff).
Runs in its own process (`python -m devtools.worker`), apart from the moto server, so it can be
killed and restarted without losing state.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from chalicelib.adapters.aws import client as aws_client
from chalicelib.bootstrap import get_deps
from chalicelib.services.batch import process_dead_letters, process_jobs
from chalicelib.services.deps import Deps
from chalicelib.services.webhooks import process_webhooks
from devtools import logs

log = logging.getLogger("coderunner.worker")
WEBHOOK_CONCURRENCY = 4  # attempts in flight at once (each at most ~5 s)
# A receive returns as soon as a message is receivable (moto's long poll is woken: devtools/motoserver.py); the
# wait only bounds how long an idle loop takes to notice `stop` (main() gives the loops 8 s). Each idle receive
# costs a signed request in this process and a scan in moto's: 9 loops a process polled 9 times a second at 1 s.
POLL_WAIT_S = 5
READY_SUFFIX = ".ready"


def lambda_sqs_record(message: dict[str, Any], arn: str) -> dict[str, Any]:
    """An SQS message as it appears in a Lambda event."""
    attributes = dict(message.get("Attributes", {}))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    }


class QueueLoop:
    """One queue: a receiver thread handing message groups to a pool of `concurrency` workers."""

    def __init__(
        self,
        deps: Deps,
        url: str,
        concurrency: int,
        handler: Callable[[Deps, dict[str, Any]], dict[str, Any]],
        stop: threading.Event,
    ) -> None:
        self.deps, self.url, self.handler, self.stop = deps, url, handler, stop
        self.free = threading.Semaphore(concurrency)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=url.rsplit("/", 1)[-1])
        self.sqs = aws_client("sqs")
        self.arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - a loop must survive a failed poll; it logs and goes on
                log.exception("poll failed", extra={"queue": self.url})
                self.stop.wait(1)
        self.pool.shutdown(wait=True)

    def _poll_once(self) -> None:
        self.free.acquire()
        available = 1
        while available < 10 and self.free.acquire(blocking=False):
            available += 1
        try:
            resp = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=available,
                WaitTimeSeconds=POLL_WAIT_S,
                MessageSystemAttributeNames=["All"],
            )
        except Exception:
            self._release(available)
            raise
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for message in resp.get("Messages", []):
            groups[message.get("Attributes", {}).get("MessageGroupId", "")].append(lambda_sqs_record(message, self.arn))
        self._release(available - len(groups))
        for records in groups.values():
            self.pool.submit(self._process, records)

    def _release(self, n: int) -> None:
        for _ in range(max(0, n)):
            self.free.release()

    def _process(self, records: list[dict[str, Any]]) -> None:
        try:
            response = self.handler(self.deps, {"Records": records})
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            done = [r for r in records if r["messageId"] not in failed]
            if done:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(done)],
                )
        except Exception:  # noqa: BLE001 - like Lambda: the batch is retried after its visibility timeout
            log.exception("batch failed", extra={"queue": self.url})
        finally:
            self.free.release()


def local_concurrency(deps: Deps, tier: str) -> int:
    return deps.settings.capacity(tier)


def run_workers(stop: threading.Event, tiers: list[str] | None = None) -> list[threading.Thread]:
    """Start a loop for each tier queue and DLQ; returns their threads."""
    deps = get_deps()
    queue: Any = deps.queue
    threads = []
    loops: list[QueueLoop] = []
    if deps.delivery is not None:  # webhook attempts, from their own (standard) queue
        url: str = deps.delivery.webhook_queue.url  # type: ignore[attr-defined]
        loops.append(QueueLoop(deps, url, WEBHOOK_CONCURRENCY, process_webhooks, stop))
    for tier in tiers or list(deps.settings.tiers):
        loops += [
            QueueLoop(deps, queue.url(tier), local_concurrency(deps, tier), process_jobs, stop),
            QueueLoop(deps, queue.url(tier, True), 1, process_dead_letters, stop),
        ]
    for loop in loops:
        thread = threading.Thread(target=loop.run, name=f"loop-{loop.url.rsplit('/', 1)[-1]}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def announce_ready() -> None:
    """Tell the local stack this process polls its queues (a file in its signal directory; see stack.py)."""
    directory = os.environ.get("CODERUNNER_SIGNAL_DIR")
    if directory:
        with open(os.path.join(directory, f"worker-{os.getpid()}{READY_SUFFIX}"), "w"):
            pass


def main() -> None:
    from devtools.children import exit_with_parent

    logs.configure("worker")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    exit_with_parent()
    threads = run_workers(stop)
    log.info("worker loops running: %d", len(threads))
    announce_ready()
    while not stop.wait(0.5):
        pass
    # One deadline for all loops: a loop in a long-poll receive or a run ends when that returns; the stack
    # waits 10 s for this process in all, and the loops are daemon threads.
    deadline = time.monotonic() + 8
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
    main()
