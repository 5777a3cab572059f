"""Start one emulated Lambda execution environment or Fargate container: run as root, end as the sandbox's uid.

Run as `python -I -S sandbox_launcher.py` with a JSON config on stdin (never in argv: any process may read
another's command line). In order, as root:
1. join the environment's cgroups (the function's or the task's memory, a process cap);
2. enter a mount namespace of its own: a private /tmp (the environment's, owned by its uid) and the host's
   other world-writable directories read-only, so only /tmp is writable, as in Lambda and Fargate;
3. load the platform's own seccomp policy (`platform_policy_filter`: the prctl options to refuse, e.g.
   `CODERUNNER_EMULATE_DENY_PRCTL`, and no new namespaces, so no bubblewrap), as a privileged process that
   does not set no_new_privs for the code it starts;
4. drop to the uid and exec the runtime (Lambda's runtime client, or the task's entry point) with the given
   environment and working directory.
Standard library and `chalicelib.sandbox` only (the repository root comes from the config).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18


def _mount(libc: Any, source: str | None, target: str, flags: int) -> None:
    encoded = source.encode() if source is not None else None
    if libc.mount(encoded, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def private_mounts(libc: Any, private_tmp: str, readonly: list[str]) -> None:
    """A mount namespace where /tmp is `private_tmp` and each of `readonly` is read-only."""
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    _mount(libc, None, "/", MS_REC | MS_PRIVATE)  # nothing we mount leaks back to the host
    _mount(libc, private_tmp, "/tmp", MS_BIND)
    for path in readonly:
        if os.path.isdir(path) and not os.path.islink(path):
            _mount(libc, path, path, MS_BIND | MS_REC)
            _mount(libc, None, path, MS_REMOUNT | MS_BIND | MS_RDONLY)


def main() -> None:
    config: dict[str, Any] = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    sys.path.insert(0, config["repo"])
    from chalicelib.sandbox import kernel, seccomp_filter

    libc = kernel.libc()
    for procs in config.get("cgroup_procs", []):
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    private_mounts(libc, config["private_tmp"], config.get("readonly", []))
    policy = seccomp_filter.platform_policy_filter(config.get("deny_prctl", []), deny_namespaces=True)
    kernel.install_filter(policy, set_no_new_privs=False)
    uid = config["uid"]
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.chdir(config["cwd"])
    os.execve(config["argv"][0], config["argv"], config["env"])


if __name__ == "__main__":
    main()
