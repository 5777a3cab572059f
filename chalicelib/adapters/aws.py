"""Lazily built, cached boto3 clients that speak the project's errors instead of botocore's.

No client is created at import time (boto3 itself is imported on first use): moto, `AWS_ENDPOINT_URL` and
test fixtures must be in place first, and a function that never calls AWS (the sandbox) never pays for it.
`reset_clients()` drops the cache (tests switch endpoints between runs).

Every call through a client from here translates failures once, for every adapter:
- a lost conditional write -> `ConditionFailed` (adapters turn it into StaleState, QueueFull, ... );
- throttling -> `DependencyThrottled`; a 5xx, a timeout or an unreachable endpoint -> `DependencyUnavailable`
  (both PlatformFaults: retry later);
- anything else AWS refuses -> `BackendRejected`: our request was invalid, a platform bug.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalicelib.domain.errors import BackendRejected, DependencyThrottled, DependencyUnavailable

if TYPE_CHECKING:
    from botocore.config import Config

_lock = threading.Lock()
_clients: dict[str, Any] = {}

_THROTTLED = {
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "LimitExceededException",
    "EC2ThrottledException",
}
_UNAVAILABLE = {"InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable", "RequestTimeout"}
# Client methods that do not call AWS: passed through untouched.
_LOCAL_METHODS = {"generate_presigned_url", "generate_presigned_post", "get_paginator", "get_waiter", "can_paginate"}


class ConditionFailed(Exception):
    """A conditional write's condition did not hold; `item` is the item as it stood, when AWS returned it."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("the condition did not hold")
        self.item = item


def translate(service: str, exc: Exception) -> Exception:
    """The project's error for a botocore exception raised by a call to `service`."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ConditionalCheckFailedException":
            return ConditionFailed(exc.response.get("Item"))  # type: ignore[arg-type]
        if code in _THROTTLED or status == 429:
            return DependencyThrottled(f"{service} throttled: {code}")
        if code in _UNAVAILABLE or status >= 500:
            return DependencyUnavailable(f"{service} failed: {code or status}")
        return BackendRejected(service, code, str(error.get("Message", "")))
    if isinstance(exc, BotoCoreError):
        return DependencyUnavailable(f"{service} unreachable: {type(exc).__name__}")
    return exc


class TranslatingClient:
    """A boto3 client whose calls raise the project's errors (see the module docstring)."""

    def __init__(self, raw: Any, service: str) -> None:
        self.raw, self.service = raw, service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.raw, name)
        if not callable(attr) or name.startswith("_") or name in _LOCAL_METHODS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - translated below; anything else is re-raised as is
                translated = translate(self.service, exc)
                if translated is exc:
                    raise
                raise translated from exc

        return call


def _config(long_call: bool) -> Config:
    from botocore.config import Config

    if long_call:
        # For calls that legitimately last minutes (a synchronous sandbox invoke): a short read timeout would
        # cut the run, and a retry would run the same job a second time.
        return Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=3, read_timeout=960)
    # Fail fast on the request path: standard mode retries throttling with backoff, but a hung endpoint must
    # not hold an API request for a minute.
    return Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=25, max_pool_connections=50
    )


def client(service: str) -> TranslatingClient:
    """Return the shared client for `service`, building it on first use (thread-safe)."""
    return _shared(service, service, long_call=False)


def long_call_client(service: str) -> TranslatingClient:
    """A shared client for `service` with a 16-minute read timeout and no retries."""
    return _shared(f"{service}#long", service, long_call=True)


def _shared(name: str, service: str, long_call: bool) -> TranslatingClient:
    existing = _clients.get(name)
    if existing is not None:
        return existing  # type: ignore[no-any-return]
    with _lock:
        if name not in _clients:
            import boto3

            # boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_<SERVICE> by itself.
            raw = boto3.session.Session().client(service, config=_config(long_call))  # type: ignore[call-overload]
            _clients[name] = TranslatingClient(raw, service)
        return _clients[name]  # type: ignore[no-any-return]


class LazyClient:
    """A class attribute that gives the instance's injected client (attribute `attr`, wrapped so it speaks our
    errors), or builds a shared one on first use (never at import time)."""

    def __init__(self, service: str, factory: Callable[[str], Any] = client, attr: str = "_client") -> None:
        self.service, self.factory, self.attr = service, factory, attr

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        current = getattr(obj, self.attr)
        if current is None:
            current = self.factory(self.service)
        if not isinstance(current, TranslatingClient):
            current = TranslatingClient(current, self.service)
        setattr(obj, self.attr, current)
        return current


def reset_clients() -> None:
    """Forget every cached client, so the next call builds one against the current environment."""
    with _lock:
        _clients.clear()
