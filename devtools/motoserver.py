"""moto for `make dev` and the tests, with DynamoDB's per-item atomicity restored and SQS long polls that do
not spin.

Two shapes: `start_moto(port)` is one threaded server for every service in this process (the tests' fixture,
and the local stack's catch-all for services it has no process for); `python -m devtools.motoserver SERVICE
PORT` serves one service from its own backend app in a process of its own (the local stack runs DynamoDB and
SQS so: a request goes straight to its service's routes instead of through `DomainDispatcherApplication`,
which matches the request against every service's URL patterns under one lock, and each service gets a
core's worth of GIL). The fix that concerns a service is applied in whichever process serves it.

Real DynamoDB applies a conditional write atomically: two `UpdateItem` calls with the same condition
cannot both succeed. moto's server evaluates the condition and applies the update as two steps in a
threaded werkzeug server, and under contention we observed both writers win (a rate window counted
twice, a slot granted twice). The counters behind quotas and concurrency caps rest on that guarantee,
so every DynamoDB write in moto's backend is serialised by one lock here, and so is every read (moto's reads
iterate items a concurrent write mutates, and failed with a 500 under load). This is an emulator-fidelity fix,
not a change of behaviour: it makes moto as strict as the real service.

A second fix, for SQS long polls: moto decides which FIFO message groups are busy once, when the poll
starts, then re-scans in a tight loop until the wait is over whenever visible messages exist (even if all
of them are held back by busy groups). A poll then burns a core and misses a group freed meanwhile for up
to the whole wait, where SQS would return at once. Here a long poll is a series of short scans, each with a
fresh view of the groups, woken at once by whatever can make a message receivable (a message sent, one deleted
or its visibility changed, which frees its FIFO group) and otherwise after `_RESCAN_S` (a visibility timeout
or a delay that ran out). moto's queues are not thread-safe, so a scan, a send, a delete and a visibility
change each hold one lock (two concurrent scans could both take a message and fail with a 500 after counting
it as received, which pushed messages towards their DLQ under load).

Speed (`faster_dynamodb`), with moto's behaviour unchanged: moto spent most of a DynamoDB request's CPU on work
that does not depend on the request: serialising an item response by walking botocore's output shape (the
response is already DynamoDB JSON: `json.dumps` gives the same document, tests/integration/test_motoserver.py
compares the two), listing the handler's methods with `inspect` on every request, and parsing the same few
update and condition expressions again and again (the parsed update AST is never mutated: moto's validator
deep-copies it; the condition lexer's tokens are immutable).
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from typing import Any

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
# moto's reads iterate items that a concurrent write mutates ("dictionary changed size during iteration": a
# 500 for a Query under load); the GIL lets one request compute at a time anyway, so reads take the lock too.
_READS = ("get_item", "query", "scan")  # the batch and transaction reads call get_item
_RESCAN_S = 0.25
_lock = threading.RLock()
# moto's SQS queues are not thread-safe either: two receives at once both took a message (a 500, "list.remove(x):
# x not in list", after the message had been counted as received: it came back later, nearer its DLQ).
_sqs_lock = threading.RLock()
_patched = False
_patched_sqs = False
_patched_speed = False
# Operations whose results are plain DynamoDB JSON (no timestamps, nothing the output shape renames or drops).
_ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
_EXPRESSION_CACHE = 512


def serialise_dynamodb_writes() -> None:
    """Wrap moto's DynamoDB backend methods (writes and reads) in one process-wide lock (idempotent)."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in (*_WRITES, *_READS):
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue
        setattr(DynamoDBBackend, name, _locked(original))
    _patched = True


def _locked(method: Any, lock: Any = _lock) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return wrapper


def long_poll_without_spinning() -> None:
    """Make moto's SQS long poll a series of short scans (idempotent; see the module docstring)."""
    global _patched_sqs
    if _patched_sqs:
        return
    from moto.sqs.models import SQSBackend

    SQSBackend.receive_message = _short_scans(SQSBackend.receive_message)  # type: ignore[method-assign]
    for name in ("delete_message", "change_message_visibility"):  # the batch forms call these
        setattr(SQSBackend, name, _wakes_polls(getattr(SQSBackend, name)))
    for name in ("send_message", "purge_queue"):
        setattr(SQSBackend, name, _locked(getattr(SQSBackend, name), _sqs_lock))
    _patched_sqs = True


def _wakes_polls(method: Any) -> Any:
    """`method(self, queue_name, ...)`, then wake the queue's long polls: a FIFO group may be free now."""

    @functools.wraps(method)
    def wrapper(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with _sqs_lock:
            result = method(self, queue_name, *args, **kwargs)
        condition = self.get_queue(queue_name)._messages_lock
        with condition:
            condition.notify_all()
        return result

    return wrapper


def _short_scans(receive: Any) -> Any:
    @functools.wraps(receive)
    def wrapper(
        self: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> Any:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with _sqs_lock:
                found = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            left = deadline - time.monotonic()
            if found or left <= 0:
                return found
            condition = self.get_queue(queue_name)._messages_lock
            with condition:  # notified when a message is sent
                condition.wait(timeout=min(_RESCAN_S, left))

    return wrapper


def faster_dynamodb() -> None:
    """Cut moto's per-request DynamoDB CPU without changing a response (idempotent; see the module docstring)."""
    global _patched_speed
    if _patched_speed:
        return
    from importlib import import_module

    from moto.dynamodb.comparisons import ConditionExpressionParser
    from moto.dynamodb.responses import DynamoHandler

    core_responses: Any = import_module("moto.core.responses")
    core_responses.method_names_from_class = functools.cache(core_responses.method_names_from_class)
    DynamoHandler.serialized = _json_items(DynamoHandler.serialized)  # type: ignore[method-assign]
    update_parser: Any = import_module("moto.dynamodb.parsing.expressions").UpdateExpressionParser
    parse_update: Any = functools.lru_cache(maxsize=_EXPRESSION_CACHE)(update_parser.make.__func__)
    update_parser.make = classmethod(lambda cls, expression: parse_update(cls, expression))
    ConditionExpressionParser._lex_condition_expression = _cached_lex(  # type: ignore[method-assign]
        ConditionExpressionParser._lex_condition_expression
    )
    _patched_speed = True


def _json_items(serialized: Any) -> Any:
    """`serialized` with item operations' results written by `json.dumps`, as moto's serializer writes them."""
    from moto.core.responses import ActionResult

    @functools.wraps(serialized)
    def wrapper(self: Any, action_result: Any) -> Any:
        result = action_result.result
        if type(action_result).execute_result is not ActionResult.execute_result or not isinstance(result, dict):
            return serialized(self, action_result)  # errors, empty and paginated results: moto's own way
        operation = self._get_action()
        if operation not in _ITEM_OPERATIONS:
            return serialized(self, action_result)
        members = _output_members(operation)
        body = json.dumps({k: v for k, v in result.items() if k in members}, default=_binary)
        return 200, {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}, body

    return wrapper


@functools.cache
def _output_members(operation: str) -> frozenset[str]:
    """The top-level keys of `operation`'s response (moto's serializer drops any other key moto adds)."""
    from moto.core.responses import get_service_model

    return frozenset(get_service_model("dynamodb").operation_model(operation).output_shape.members)


def _binary(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON: {type(value).__name__}")


def _cached_lex(lex: Any) -> Any:
    from collections import deque

    from moto.dynamodb.comparisons import ConditionExpressionParser

    @functools.lru_cache(maxsize=_EXPRESSION_CACHE)
    def tokens(expression: str) -> tuple[Any, ...]:
        return tuple(lex(ConditionExpressionParser(expression, {}, {})))

    @functools.wraps(lex)
    def wrapper(self: Any) -> Any:
        return deque(tokens(self.condition_expression))

    return wrapper


def _dynamodb_fixes() -> None:
    serialise_dynamodb_writes()
    faster_dynamodb()


SERVICE_FIXES = {
    "dynamodb": _dynamodb_fixes,
    "sqs": long_poll_without_spinning,
}


def serve_service(service: str, port: int) -> None:
    """Serve one service's moto backend app on 127.0.0.1:`port` until SIGTERM (blocks)."""
    import logging

    from moto.server import create_backend_app

    from devtools.keepalive import serve

    fix = SERVICE_FIXES.get(service)
    if fix is not None:
        fix()
    app = create_backend_app(service)  # type: ignore[arg-type]
    app.debug = False  # moto turns Flask's debug helpers on: per-request checks nobody reads here
    server = serve(app, "127.0.0.1", port)  # connections kept open: see devtools/keepalive.py
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server.serve_forever()


def start_moto(port: int) -> Any:
    """Serve every moto service on 127.0.0.1:`port` from a thread (moto's own dispatcher, as ThreadedMotoServer
    does, on the keep-alive server), with the fixes above; returns the server (`stop()` stops it)."""
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    from devtools.keepalive import start

    serialise_dynamodb_writes()
    faster_dynamodb()
    long_poll_without_spinning()
    server = start(DomainDispatcherApplication(create_backend_app), "127.0.0.1", port)
    # werkzeug logs every request at INFO; the platform's own logs are what a developer wants to see.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return server


def main() -> None:
    """`python -m devtools.motoserver SERVICE PORT`: one service in this process (the local stack starts it)."""
    import signal
    import sys

    from devtools.children import exit_with_parent

    service, port = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the stack, which stops its pieces in order
    exit_with_parent()
    serve_service(service, port)


if __name__ == "__main__":
    main()
