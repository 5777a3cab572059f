"""Lazily built, cached boto3 clients.

No client is created at import time: moto, `AWS_ENDPOINT_URL` and test fixtures must be in place first.
`reset_clients()` drops the cache (tests switch endpoints between runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()
_clients: dict[str, Any] = {}

# Fail fast on the request path: standard retry mode retries throttling with backoff, but a hung endpoint
# must not hold an API request for a minute.
_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=3,
    read_timeout=25,
    max_pool_connections=50,
)


# For calls that legitimately last minutes (a synchronous sandbox invoke): a short read timeout would cut
# the run, and a retry would run the same job a second time.
_LONG_CALL = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=3, read_timeout=960)


def client(service: str) -> Any:
    """Return the shared boto3 client for `service`, building it on first use (thread-safe)."""
    return _shared(service, service, _CONFIG)


def long_call_client(service: str) -> Any:
    """A shared client for `service` with a 16-minute read timeout and no retries."""
    return _shared(f"{service}#long", service, _LONG_CALL)


def _shared(name: str, service: str, config: Config) -> Any:
    existing = _clients.get(name)
    if existing is not None:
        return existing
    with _lock:
        if name not in _clients:
            # boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> by itself.
            _clients[name] = boto3.session.Session().client(service, config=config)  # type: ignore[call-overload]
        return _clients[name]


class LazyClient:
    """A class attribute that gives the instance's injected `_client`, or builds a shared one on first use
    (never at import time, so moto and endpoints set later still apply)."""

    def __init__(self, service: str, factory: Callable[[str], Any] = client) -> None:
        self.service, self.factory = service, factory

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        if obj._client is None:
            obj._client = self.factory(self.service)
        return obj._client


def reset_clients() -> None:
    """Forget every cached client, so the next call builds one against the current environment."""
    with _lock:
        _clients.clear()
