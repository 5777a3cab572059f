"""The embedded moto server used by `make dev` and the tests, with DynamoDB's per-item atomicity restored.

Real DynamoDB applies a conditional write atomically: two `UpdateItem` calls with the same condition
cannot both succeed. moto's server evaluates the condition and applies the update as two steps in a
threaded werkzeug server, and under contention we observed both writers win (a rate window counted
twice, a slot granted twice). The counters behind quotas and concurrency caps rest on that guarantee,
so every DynamoDB write in moto's backend is serialised by one lock here. Reads stay concurrent. This
is an emulator-fidelity fix, not a change of behaviour: it makes moto as strict as the real service.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_lock = threading.RLock()
_patched = False


def serialise_dynamodb_writes() -> None:
    """Wrap moto's DynamoDB backend write methods in one process-wide lock (idempotent)."""
    global _patched
    if _patched:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue
        setattr(DynamoDBBackend, name, _locked(original))
    _patched = True


def _locked(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return method(*args, **kwargs)

    return wrapper


def start_moto(port: int) -> Any:
    """Start a ThreadedMotoServer on 127.0.0.1:`port` with atomic DynamoDB writes; returns the server."""
    import logging

    from moto.server import ThreadedMotoServer

    serialise_dynamodb_writes()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # werkzeug logs every request at INFO; the platform's own logs are what a developer wants to see.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return server
