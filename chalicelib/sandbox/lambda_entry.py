"""Body of the dedicated sandbox Lambda function: one job per invocation, nothing left behind.

Registered by app.py as `@app.lambda_function(name="sandbox")`, calling `handle`. The function's role has no
permissions and it sits in a VPC without egress, but the network layer is our seccomp filter all the same:
nothing is taken on trust. bubblewrap and cgroups are not available in Lambda, so the run uses rlimits, the
env allow-list, seccomp and a fresh dir. Lambda's own seccomp policy refuses some prctl options (at least
PR_SET_NAME, PR_SET_PDEATHSIG and PR_SET_CHILD_SUBREAPER, by other projects' reports): each refusal is
logged once and reported by `handler_layers`, and the isolation refuses to run when a guarantee goes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
from collections.abc import Collection
from typing import Any

from chalicelib.sandbox import hostclean, kernel
from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest
from chalicelib.sandbox.runner import execute

SCRATCH_ENV = "SANDBOX_SCRATCH_ROOT"
# The slot's key (lock file, and uid where we are root: never in Lambda). Tests that call `handle` on a host
# whose local stack holds the default slots set their own.
SLOT_ENV = "SANDBOX_SLOT_UID_BASE"

logger = logging.getLogger(__name__)


def lambda_isolation(scratch_root: str) -> Isolation:
    """The isolation a Lambda sandbox can have (one job at a time per execution environment)."""
    return _lambda_isolation(scratch_root, int(os.environ.get(SLOT_ENV, "64000")))


@functools.cache
def _lambda_isolation(scratch_root: str, slot_uid_base: int) -> Isolation:
    settings = IsolationSettings(
        use_bwrap=False,
        use_cgroups=False,
        slots=1,
        slot_uid_base=slot_uid_base,
        work_root=os.path.join(scratch_root, "work"),
        # One prepared sandbox, started by the handler after its cleanup (`handle`), ready while the
        # environment waits for the next invocation.
        pool_size=1,
        pool_keeps_a_slot_free=False,
        pool_refills_in_background=False,
    )
    return Isolation(settings)


def handler_layers(scratch_root: str) -> dict[str, bool | str]:
    """The isolation's layers plus whether this handler is the subreaper of what jobs leave behind."""
    return {**lambda_isolation(scratch_root).layers(), "handler_subreaper": become_subreaper()}


def wipe(root: str, keep: Collection[str] = ()) -> None:
    """Empty `root` (Lambda's /tmp survives between invocations), never following links out of it.

    Paths in `keep` (a prepared sandbox's work dir and the slot locks) and the dirs leading to them stay.
    """
    os.makedirs(root, exist_ok=True)
    kept = {os.path.normpath(path) for path in keep}
    for entry in os.scandir(root):
        path = os.path.normpath(entry.path)
        if path in kept:
            continue
        if entry.is_dir(follow_symlinks=False) and any(k.startswith(path + os.sep) for k in kept):
            wipe(path, kept)
            continue
        with contextlib.suppress(FileNotFoundError):
            hostclean.remove_tree(entry.path)


def kill_leftovers(spare: Collection[tuple[int, int]] = ()) -> int:
    """SIGKILL whatever jobs left running; returns how many descendants of this handler were found.

    In Lambda we are normally a subreaper, so orphans stay in our tree. Where Lambda refuses that, orphans
    re-parent to its init: then every process of our uid started after this handler is killed too (the
    handler's uid runs nothing else in its execution environment). `spare` names the processes that may
    outlive an invocation, by pid and start time (`SandboxPool.processes()`: the prepared sandbox).
    """
    me = os.getpid()
    keep = {pid for pid, started in spare if _started(pid) == started}
    pids = [pid for pid, fields in kernel.descendants(me) if fields[0] not in ("Z", "X") and pid not in keep]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if _in_lambda() and not become_subreaper():
        spared, uid, since = kernel.self_and_ancestors() | keep, os.getuid(), kernel.start_ticks(me)
        kernel.kill_until_gone(lambda: kernel.started_since(uid, since, spared))
    return len(pids)


def _started(pid: int) -> int | None:
    try:
        return kernel.start_ticks(pid)
    except OSError:
        return None


def _in_lambda() -> bool:
    # Only inside Lambda is the handler's uid ours alone (not a test runner's, not a developer's).
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


@functools.cache
def become_subreaper() -> bool:
    """In Lambda, make this handler the reaper of every orphan a job leaves; False (logged once) if refused."""
    if not _in_lambda():
        return False
    if kernel.allowed(kernel.PR_SET_CHILD_SUBREAPER, 1):
        return True
    logger.warning("prctl(PR_SET_CHILD_SUBREAPER) refused: leftovers are found by uid and start time instead")
    return False


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Run the `ExecutionRequest` in `event` and return the `ExecutionResult` as JSON-ready dict.

    Raises (so the invoker sees a FunctionError) on a bad request or a platform fault.
    """
    scratch = os.environ.get(SCRATCH_ENV, "/tmp")
    become_subreaper()
    request = ExecutionRequest.model_validate(event)
    pool = lambda_isolation(scratch).pool  # its prepared sandbox is the one thing that outlives an invocation
    kill_leftovers(spare=pool.processes() if pool else ())
    wipe(scratch, keep=pool.paths() if pool else ())
    try:
        result = execute(request, isolation=lambda_isolation(scratch))
    finally:
        kill_leftovers()
        wipe(scratch)
        if pool is not None:
            pool.refill()  # the next invocation's sandbox starts now and waits, frozen with the environment
    return result.model_copy(update={"sandbox": "lambda"}).model_dump(mode="json")
