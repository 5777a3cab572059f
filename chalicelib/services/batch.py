"""SQS batches in, `batchItemFailures` out: the same function serves Lambda and the local worker loops."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalicelib.services.reaper import dead_letter
from chalicelib.services.worker import RetryLater, handle_message

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    from chalicelib.services.deps import Deps

log = logging.getLogger(__name__)


def _processor() -> SqsFifoPartialProcessor:
    # Powertools' batch utilities on first use: only the queue functions need them, not every cold start.
    from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor

    # A failure holds back only its own message group (one slot of one key), never the whole batch.
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    processor.raise_on_entire_batch_failure = False  # report failures; do not fail the invocation
    return processor


def process_jobs(deps: Deps, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A tier queue's batch: run each job; a message to retry later is reported as failed and delayed."""

    def record_handler(record: SQSRecord) -> str:
        try:
            message = json.loads(record.body)
        except ValueError:
            # Not ours (nothing we send looks like this): retrying cannot help, so drop it, loudly.
            log.error("malformed message dropped", extra={"message_id": record.message_id})
            return "malformed"
        try:
            return handle_message(deps, message, _receives(record))
        except RetryLater as exc:
            deps.queue.delay(record.receipt_handle, str(message.get("tier")), exc.delay_s)
            raise

    return _process(event, context, record_handler)


def _receives(record: SQSRecord) -> int:
    try:
        return int(record.attributes.approximate_receive_count)
    except (KeyError, TypeError, ValueError):
        return 1


def process_dead_letters(deps: Deps, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """A tier DLQ's batch: mark each job `error` and refund its quota."""
    return _process(event, context, lambda record: dead_letter(deps, json.loads(record.body)))


def _process(event: dict[str, Any], context: Any, handler: Callable[[SQSRecord], Any]) -> dict[str, Any]:
    from aws_lambda_powertools.utilities.batch import process_partial_response

    response = process_partial_response(event=event, record_handler=handler, processor=_processor(), context=context)
    return dict(response)
