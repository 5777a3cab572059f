"""Body of the dedicated sandbox Lambda function: one job per invocation, nothing left behind.

The function is a container image built from the same image as the Fargate task (infra/sandbox/Dockerfile),
with `handle` as its handler: Python, Node.js and Bash at the versions pinned there, and nothing of the API's
dependencies (no boto3: this module and what it imports are `chalicelib.sandbox` and pydantic).

Lambda runs the handler and the user's program as the same uid, so the handler protects itself first, once
per execution environment, before any user code: it removes the role's credentials from its environment,
zeroes its initial environment block and makes itself non-dumpable (`selfguard`). The worker sends a fresh key
with each invocation; every answer is sealed with it (`integrity`), so nothing the job posts to the Runtime
API passes for a result. When a guarantee cannot hold (the handler stays dumpable, no layer cuts the network,
no way to end a job's daemons), the answer is a sealed refusal saying why, and no user code runs.

Events: `{"request": ExecutionRequest, "key": hex}` runs a job; `{"probe": true, "key": hex}` answers what this
sandbox offers (runtimes, tools, layers, refusal). bubblewrap and cgroups are not available in Lambda, so a
run has rlimits, the env allow-list, seccomp and a fresh dir. Lambda's own seccomp policy refuses some prctl
options (at least PR_SET_NAME, PR_SET_PDEATHSIG and PR_SET_CHILD_SUBREAPER, by other projects' reports): each
refusal is logged once and reported in the layers.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Collection
from typing import Any

from chalicelib.sandbox import hostclean, integrity, kernel, selfguard
from chalicelib.sandbox.local import Isolation, IsolationSettings, refusal_reason
from chalicelib.sandbox.models import ExecutionRequest, SandboxOffer, SandboxRefused
from chalicelib.sandbox.offers import host_offer
from chalicelib.sandbox.runner import InvalidRequest, execute

SCRATCH_ENV = "SANDBOX_SCRATCH_ROOT"
PROBE_JOB_ID = "probe"
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
        sandbox="lambda",
        # One prepared sandbox, started by the handler after its cleanup (`handle`), ready while the
        # environment waits for the next invocation.
        pool_size=1,
        pool_keeps_a_slot_free=False,
        pool_refills_in_background=False,
    )
    return Isolation(settings)


@functools.cache
def guard() -> selfguard.Guard | None:
    """In Lambda, harden this process once, before any user code runs; None elsewhere (tests call `handle`
    in their own process, which must keep its environment)."""
    if not _in_lambda():
        return None
    done = selfguard.harden()
    if not done.non_dumpable:
        logger.error("prctl(PR_SET_DUMPABLE, 0) refused: this sandbox refuses to run user code")
    return done


def handler_layers(scratch_root: str) -> dict[str, bool | str]:
    """The isolation's layers, whether this handler is the subreaper of what jobs leave behind, and what it did
    to itself (non-dumpable, credentials removed, initial environment zeroed)."""
    done = guard()
    own = done.layers() if done is not None else {}
    return {**lambda_isolation(scratch_root).layers(), "handler_subreaper": become_subreaper(), **own}


def refusal(scratch_root: str) -> str | None:
    """Why this environment may not run user code, or None when every guarantee holds."""
    done = guard()
    return (selfguard.refusal(done) if done is not None else None) or refusal_reason(
        lambda_isolation(scratch_root).layers()
    )


def offer(scratch_root: str) -> SandboxOffer:
    """What this sandbox offers, as probed inside the function."""
    layers = handler_layers(scratch_root)
    return host_offer("lambda", layers, refusal(scratch_root), "probed in the sandbox function")


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
    """SIGKILL whatever jobs left running and reap them; returns how many descendants of this handler were found.

    In Lambda we are normally a subreaper, so orphans stay in our tree. Where Lambda refuses that, orphans
    re-parent to its init: then every process of our uid started after this handler is killed too (the
    handler's uid runs nothing else in its execution environment). `spare` names the processes that may
    outlive an invocation, by pid and start time (`SandboxPool.processes()`: the prepared sandbox). Outside
    Lambda (a test calling `handle` in its own process) the process tree is not ours to clear, and the
    isolation's own cleanup suffices.
    """
    if not _in_lambda():
        return 0
    me = os.getpid()
    keep = {pid for pid, started in spare if _started(pid) == started}
    pids = [pid for pid, fields in kernel.descendants(me) if fields[0] not in ("Z", "X") and pid not in keep]
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if not become_subreaper():
        spared, uid, since = kernel.self_and_ancestors() | keep, os.getuid(), kernel.start_ticks(me)
        kernel.kill_until_gone(lambda: kernel.started_since(uid, since, spared))
    _reap(pids)
    return len(pids)


def _started(pid: int) -> int | None:
    try:
        return kernel.start_ticks(pid)
    except OSError:
        return None


def _reap(killed: list[int], timeout_s: float = 3.0) -> None:
    """Reap what was killed, and every zombie child: orphans re-parented to us (the subreaper) would stay
    zombies for the life of the execution environment, counting against its process cap. A live child (the
    prepared sandbox) is never waited for."""
    deadline = time.monotonic() + timeout_s
    waiting = set(killed)
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (reaped by its own parent) or gone
                waiting.discard(pid)
                continue
            if done:
                waiting.discard(pid)
        if waiting:
            time.sleep(0.002)  # a killed child not dead yet
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass  # zombies only: WNOHANG answers 0 while the remaining children live


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


def _key(event: dict[str, Any]) -> str:
    key = event.pop("key", None)  # kept only in this (non-dumpable) process's memory
    if not isinstance(key, str) or len(key) < 2 * integrity.KEY_BYTES:
        raise InvalidRequest("an invocation carries the key that seals its answer")
    return key


def _refused(key: str, job_id: str, reason: str, layers: dict[str, bool | str]) -> dict[str, str]:
    logger.error("refusing to run user code: %s", reason)
    return integrity.seal(key, "refusal", job_id, json.dumps({"reason": reason, "layers": layers}))


def handle(event: dict[str, Any], context: Any) -> dict[str, str]:
    """Answer one invocation with a sealed result, refusal or offer (see the module docstring).

    Raises (so the invoker sees a FunctionError) on a bad request or a platform fault.
    """
    guard()  # before anything else: no user code has run in this environment yet
    become_subreaper()
    scratch = os.environ.get(SCRATCH_ENV, "/tmp")
    key = _key(event)
    if event.get("probe"):
        return integrity.seal(key, "offer", PROBE_JOB_ID, offer(scratch).model_dump_json())
    request = ExecutionRequest.model_validate(event.get("request"))
    reason = refusal(scratch)
    if reason is not None:
        return _refused(key, request.job_id, reason, handler_layers(scratch))
    pool = lambda_isolation(scratch).pool  # its prepared sandbox is the one thing that outlives an invocation
    kill_leftovers(spare=pool.processes() if pool else ())
    wipe(scratch, keep=pool.paths() if pool else ())
    try:
        result = execute(request, isolation=lambda_isolation(scratch))
    except SandboxRefused as exc:
        return _refused(key, request.job_id, exc.reason, handler_layers(scratch))
    finally:
        kill_leftovers()
        wipe(scratch)
        if pool is not None:
            pool.refill()  # the next invocation's sandbox starts now and waits, frozen with the environment
    body = result.model_copy(update={"sandbox": "lambda"}).model_dump_json()
    return integrity.seal(key, "result", request.job_id, body)
