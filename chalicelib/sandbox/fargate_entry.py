"""Entry point of the Fargate sandbox container: fetch the request, run it, upload the result.

The task has no role: the request and the result travel through presigned S3 URLs passed in its
environment, so code in the container can reach exactly those two objects and nothing else.
Run as `python -m chalicelib.sandbox.fargate_entry`.
"""

from __future__ import annotations

import logging
import os
import sys
import urllib.request

from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult
from chalicelib.sandbox.runner import execute

REQUEST_URL_ENV = "SANDBOX_REQUEST_URL"
RESULT_URL_ENV = "SANDBOX_RESULT_URL"
_TIMEOUT_S = 30

logger = logging.getLogger(__name__)


def fetch_request(url: str) -> ExecutionRequest:
    """GET the request JSON from its presigned URL."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - presigned https URL
        return ExecutionRequest.model_validate_json(response.read())


def upload_result(url: str, result: ExecutionResult) -> None:
    """PUT the result JSON to its presigned URL."""
    body = result.model_dump_json().encode()
    request = urllib.request.Request(url, data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S):  # noqa: S310
        pass


def run(environ: dict[str, str] | None = None) -> int:
    """Do one job; the exit code tells the EventBridge rule whether a result was uploaded (0) or not."""
    env = os.environ if environ is None else environ
    # The network is cut by bubblewrap or our seccomp filter, never taken on trust from the subnet.
    settings = IsolationSettings(
        work_root=env.get("SANDBOX_WORK_ROOT", "/tmp/code-runner-work"),
        slots=1,
        pool_size=1,  # each test case of the job runs in a sandbox prepared while the previous one ran
        pool_keeps_a_slot_free=False,
    )
    isolation = Isolation(settings)
    if isolation.pool is not None:
        isolation.pool.start()  # the layers are probed and the first sandbox prepared while the request downloads
    request = fetch_request(env[REQUEST_URL_ENV])
    result = execute(request, isolation=isolation)
    upload_result(env[RESULT_URL_ENV], result.model_copy(update={"sandbox": "fargate"}))
    return 0


def main() -> None:
    """Container entry point."""
    logging.basicConfig(level=logging.INFO)
    sys.exit(run())


if __name__ == "__main__":
    main()
