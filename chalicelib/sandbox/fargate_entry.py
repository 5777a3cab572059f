"""Entry point of the Fargate sandbox container: fetch the request, run it, upload the sealed result.

The task has no role: the request and the result travel through presigned S3 URLs passed in its
environment, so code in the container can reach exactly those two objects and nothing else. The overrides also
carry the key that seals the result (`integrity`); the worker keeps its own copy beside the request, where the
task cannot read it.

This process is the container's first process (the task definition has no init process, whose environment
would keep the key and the URLs readable by the job) and the job runs as its uid. So before any user code
runs it removes the key and the URLs from its environment, zeroes its initial environment block and makes
itself non-dumpable (`selfguard`); if it cannot, or no layer cuts the network, it uploads a sealed refusal
instead of running the job. Run as `python -m chalicelib.sandbox.fargate_entry`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.request

from chalicelib.sandbox import integrity, selfguard
from chalicelib.sandbox.local import Isolation, IsolationSettings, refusal_reason
from chalicelib.sandbox.models import ExecutionRequest, SandboxRefused
from chalicelib.sandbox.runner import execute

JOB_ID_ENV = "SANDBOX_JOB_ID"
REQUEST_URL_ENV = "SANDBOX_REQUEST_URL"
RESULT_URL_ENV = "SANDBOX_RESULT_URL"
RESULT_KEY_ENV = "SANDBOX_RESULT_KEY"
_TIMEOUT_S = 30
EXIT_NO_KEY = 3

logger = logging.getLogger(__name__)


def fetch_request(url: str) -> ExecutionRequest:
    """GET the request JSON from its presigned URL."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:  # noqa: S310 - presigned https URL
        return ExecutionRequest.model_validate_json(response.read())


def upload(url: str, sealed: dict[str, str]) -> None:
    """PUT the sealed answer to its presigned URL."""
    request = urllib.request.Request(url, data=json.dumps(sealed).encode(), method="PUT")
    # urllib's default for a body is a form type, which some S3 implementations (moto) parse away
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S):  # noqa: S310
        pass


def _refusal(key: str, job_id: str, reason: str, layers: dict[str, bool | str]) -> dict[str, str]:
    logger.error("refusing to run user code: %s", reason)
    return integrity.seal(key, "refusal", job_id, json.dumps({"reason": reason, "layers": layers}))


def run(environ: dict[str, str] | None = None) -> int:
    """Do one job; the exit code tells the EventBridge rule whether a sealed answer was uploaded (0) or not.

    `environ=None` is the container: this process hardens itself. A given mapping (tests) leaves the calling
    process alone.
    """
    env = dict(os.environ) if environ is None else environ
    done = selfguard.harden((RESULT_KEY_ENV, REQUEST_URL_ENV, RESULT_URL_ENV)) if environ is None else None
    key, result_url = env.get(RESULT_KEY_ENV, ""), env[RESULT_URL_ENV]
    if len(key) < 2 * integrity.KEY_BYTES:
        logger.error("no result key in the task's environment: nothing can be sealed")
        return EXIT_NO_KEY
    # The network is cut by bubblewrap or our seccomp filter, never taken on trust from the subnet.
    settings = IsolationSettings(
        work_root=env.get("SANDBOX_WORK_ROOT", "/tmp/code-runner-work"),
        # Two slots: a test case runs in one while the next case's sandbox is prepared in the other (and a
        # run that finds no prepared sandbox never waits for the pool's idle one).
        slots=2,
        sandbox="fargate",
        pool_size=1,
        pool_keeps_a_slot_free=False,
    )
    isolation = Isolation(settings)
    if isolation.pool is not None:
        isolation.pool.start()  # the layers are probed and the first sandbox prepared while the request downloads
    try:
        return _serve(env, key, result_url, isolation, done)
    finally:
        if isolation.pool is not None:
            isolation.pool.close()  # the prepared sandbox's supervisor is ours to end: the task ends with us


def _serve(env: dict[str, str], key: str, result_url: str, isolation: Isolation, done: selfguard.Guard | None) -> int:
    request = fetch_request(env[REQUEST_URL_ENV])
    layers = {**isolation.layers(), **(done.layers() if done is not None else {})}
    reason = (selfguard.refusal(done) if done is not None else None) or refusal_reason(isolation.layers())
    if reason is not None:
        upload(result_url, _refusal(key, request.job_id, reason, layers))
        return 0
    try:
        result = execute(request, isolation=isolation)
    except SandboxRefused as exc:
        upload(result_url, _refusal(key, request.job_id, exc.reason, layers))
        return 0
    body = result.model_copy(update={"sandbox": "fargate"}).model_dump_json()
    upload(result_url, integrity.seal(key, "result", request.job_id, body))
    return 0


def main() -> None:
    """Container entry point."""
    logging.basicConfig(level=logging.INFO)
    sys.exit(run())


if __name__ == "__main__":
    main()
