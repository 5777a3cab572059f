"""The seccomp deny-list, compiled once to classic BPF by the system interpreter's libseccomp binding.

`python3-seccomp` exists only for the distribution's `/usr/bin/python3`, not for our venv, so the filter is
built in a short subprocess at first use and the bytes are cached for the life of the worker.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess

logger = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"

# Syscalls user code has no business making: debugging other processes, kernel and namespace control,
# keyrings, BPF, perf, io_uring (it bypasses per-syscall filtering), and cross-process memory access.
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "iopl", "ioperm", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "fanotify_init", "mount_setattr", "fsopen", "fsmount",
    "move_mount", "open_tree",
)  # fmt: skip

# Address families that reach a network; AF_UNIX stays allowed (runtimes use it locally).
DENIED_SOCKET_FAMILIES = (2, 10, 17)  # AF_INET, AF_INET6, AF_PACKET

_BUILD_SCRIPT = """
import errno, os, sys, tempfile, seccomp
f = seccomp.SyscallFilter(seccomp.ALLOW)
for name in sys.argv[1].split(","):
    try:
        f.add_rule(seccomp.ERRNO(errno.EPERM), name)
    except Exception:
        pass  # unknown on this kernel or libseccomp: nothing to deny
for family in map(int, sys.argv[2].split(",")):
    f.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, family))
# int arguments: compare the low 32 bits only.
# kill(-1, ...) would reach every process of our uid, including a same-uid supervisor (Lambda).
f.add_rule(seccomp.ERRNO(errno.EPERM), "kill", seccomp.Arg(0, seccomp.MASKED_EQ, 0xFFFFFFFF, 0xFFFFFFFF))
with tempfile.TemporaryFile() as out:
    f.export_bpf(out)
    out.seek(0)
    sys.stdout.buffer.write(out.read())
"""


@functools.cache
def compiled_filter() -> bytes | None:
    """The BPF program bytes, or None when libseccomp is not available (the layer is then reported off)."""
    if not os.path.exists(SYSTEM_PYTHON):
        logger.warning("seccomp layer off: %s not found", SYSTEM_PYTHON)
        return None
    argv = [SYSTEM_PYTHON, "-I", "-c", _BUILD_SCRIPT, ",".join(DENIED_SYSCALLS)]
    argv.append(",".join(str(family) for family in DENIED_SOCKET_FAMILIES))
    try:
        done = subprocess.run(argv, capture_output=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("seccomp layer off: cannot build the filter (%s)", exc)
        return None
    program = done.stdout
    if not program or len(program) % 8:
        logger.warning("seccomp layer off: filter has an unexpected size %d", len(program))
        return None
    return program
