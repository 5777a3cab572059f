"""Body of the dedicated sandbox Lambda function: one job per invocation, nothing left behind.

Registered by app.py as `@app.lambda_function(name="sandbox")`, calling `handle`. The function's role has no
permissions and it sits in a VPC without egress, so the network layer is the platform's; bubblewrap and
cgroups are not available in Lambda, so the run uses rlimits, the env allow-list, seccomp and a fresh dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
from typing import Any

from chalicelib.sandbox import hostclean
from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest
from chalicelib.sandbox.runner import execute

SCRATCH_ENV = "SANDBOX_SCRATCH_ROOT"
_PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def lambda_isolation(scratch_root: str) -> Isolation:
    """The isolation a Lambda sandbox can have (one job at a time per execution environment)."""
    settings = IsolationSettings(
        use_bwrap=False,
        use_cgroups=False,
        network_isolated_by_platform=True,
        slots=1,
        work_root=os.path.join(scratch_root, "work"),
    )
    return Isolation(settings)


def wipe(root: str) -> None:
    """Empty `root` (Lambda's /tmp survives between invocations), never following links out of it."""
    os.makedirs(root, exist_ok=True)
    for entry in os.scandir(root):
        with contextlib.suppress(FileNotFoundError):
            hostclean.remove_tree(entry.path)


def kill_leftovers() -> int:
    """SIGKILL every descendant of this process (in Lambda we are a subreaper, so orphans stay ours)."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
    killed = 0
    for pid in parents:
        cursor, hops = parents[pid], 0
        while cursor not in (0, 1, me) and hops < 64:
            cursor, hops = parents.get(cursor, 0), hops + 1
        if cursor == me:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def _become_subreaper() -> None:
    # Only inside Lambda: the handler process is ours alone there, unlike a test runner.
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run the `ExecutionRequest` in `event` and return the `ExecutionResult` as JSON-ready dict.

    Raises (so the invoker sees a FunctionError) on a bad request or a platform fault.
    """
    scratch = os.environ.get(SCRATCH_ENV, "/tmp")
    _become_subreaper()
    request = ExecutionRequest.model_validate(event)
    kill_leftovers()
    wipe(scratch)
    try:
        result = execute(request, isolation=lambda_isolation(scratch))
    finally:
        kill_leftovers()
        wipe(scratch)
    return result.model_copy(update={"sandbox": "lambda"}).model_dump(mode="json")
