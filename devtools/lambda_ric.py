"""A Lambda runtime interface client, as the emulator runs it in each execution environment.

Like AWS's `awslambdaric`: it imports the function's handler (`_HANDLER`, from `LAMBDA_TASK_ROOT`), then loops
on the Runtime API named by `AWS_LAMBDA_RUNTIME_API`: GET the next invocation, call the handler, POST its
answer to `/response` or the error to `/error`. It runs in the same process as the handler, with the function's
environment, as the environment's uid. Standard library only (it is copied into the emulated image).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import urllib.request
from typing import Any

VERSION = "2018-06-01"


class Context:
    """The handler's `context`, with the attributes the Python runtime gives it."""

    def __init__(self, headers: Any) -> None:
        self.aws_request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms") or 0)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _post(api: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> None:
    request = urllib.request.Request(f"http://{api}/{VERSION}/runtime/{path}", data=body, method="POST")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=30):
        pass


def _error(exc: BaseException) -> tuple[bytes, dict[str, str]]:
    kind = type(exc).__name__
    body = {"errorMessage": str(exc), "errorType": kind, "stackTrace": traceback.format_tb(exc.__traceback__)}
    return json.dumps(body).encode(), {"Lambda-Runtime-Function-Error-Type": f"Runtime.{kind}"}


def _load_handler() -> Any:
    sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
    module_name, _, function = os.environ["_HANDLER"].rpartition(".")
    return getattr(importlib.import_module(module_name), function)


def main() -> None:
    api = os.environ["AWS_LAMBDA_RUNTIME_API"]
    try:
        handler = _load_handler()
    except Exception as exc:  # noqa: BLE001 - reported to the Runtime API as Lambda's client does
        _post(api, "init/error", *_error(exc))
        sys.exit(1)
    while True:
        with urllib.request.urlopen(f"http://{api}/{VERSION}/runtime/invocation/next") as response:
            headers, payload = response.headers, response.read()
        request_id = headers.get("Lambda-Runtime-Aws-Request-Id", "")
        try:
            answer = json.dumps(handler(json.loads(payload or b"{}"), Context(headers))).encode()
        except Exception as exc:  # noqa: BLE001 - the handler's failure is the invocation's error
            _post(api, f"invocation/{request_id}/error", *_error(exc))
            continue
        _post(api, f"invocation/{request_id}/response", answer)


if __name__ == "__main__":
    main()
