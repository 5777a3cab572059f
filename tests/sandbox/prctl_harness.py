"""Run jobs the way the Lambda sandbox does, under a policy that refuses chosen prctl options.

Usage (as root): `python3 -I prctl_harness.py CONFIG_JSON`, with CONFIG_JSON holding `paths` (put first on
sys.path: the repo and a site-packages with pydantic), `deny` (prctl option names), `uid` (unprivileged,
ours alone), `work_root` (owned by that uid) and `requests` (ExecutionRequest JSON).

Like Lambda's own policy, the refusing filter is loaded by a privileged process that does not set
no_new_privs for us; then the process drops to `uid` and runs every request with the Lambda-like isolation
(no bubblewrap, no cgroups, no uid switch, one slot). It prints one JSON object: the isolation's layers,
per request its result or the sandbox's refusal plus the live processes of `uid` left afterwards, and how
the Lambda handler's own cleanup (`kill_leftovers`) dealt with a daemon planted outside its tree.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

_DAEMON = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"


def main() -> None:
    config = json.loads(sys.argv[1])
    sys.path[:0] = config["paths"]
    # lambda_entry too, before the drop to `uid`: the checkout may be unreadable to that uid (a 0700 clone dir)
    from chalicelib.sandbox import kernel, lambda_entry, seccomp_filter  # noqa: F401
    from chalicelib.sandbox.local import Isolation, IsolationSettings
    from chalicelib.sandbox.models import ExecutionRequest, SandboxUnavailable
    from chalicelib.sandbox.runner import execute

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    if config["deny"]:
        kernel.install_filter(seccomp_filter.deny_prctl_filter(config["deny"]), set_no_new_privs=False)
    uid = config["uid"]
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    root = config["work_root"]
    settings = IsolationSettings(
        use_bwrap=False,
        use_cgroups=False,
        slots=1,
        slot_uid_base=uid,
        work_root=os.path.join(root, "work"),
        lock_dir=os.path.join(root, "locks"),
    )
    isolation = Isolation(settings)
    outcomes: list[dict[str, Any]] = []
    for raw in config["requests"]:
        request = ExecutionRequest.model_validate(raw)
        try:
            outcome: dict[str, Any] = {"result": execute(request, isolation=isolation).model_dump(mode="json")}
        except SandboxUnavailable as exc:
            outcome = {"refused": str(exc)}
        outcome["left"] = kernel.started_since(uid, 0, {os.getpid()})
        outcomes.append(outcome)
    print(json.dumps({"layers": isolation.layers(), "outcomes": outcomes, "handler": _handler_cleanup(uid)}))


def _handler_cleanup(uid: int) -> dict[str, Any]:
    from chalicelib.sandbox import kernel, lambda_entry

    os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "sandbox"
    subreaper = lambda_entry.become_subreaper()
    subprocess.run([sys.executable, "-c", _DAEMON], check=True)  # its child outlives it, detached
    before = kernel.started_since(uid, 0, {os.getpid()})
    lambda_entry.kill_leftovers()
    return {"subreaper": subreaper, "before": before, "after": kernel.started_since(uid, 0, {os.getpid()})}


if __name__ == "__main__":
    main()
