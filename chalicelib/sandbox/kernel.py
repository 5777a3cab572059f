"""The few kernel calls the sandbox makes itself: `prctl`, loading a seccomp filter, finding processes.

Standard library only, and neither ctypes nor libc loaded at import: the per-job supervisor imports this in
a process that must start in milliseconds, with no access to our venv's packages. The filter itself is
built by `seccomp_filter`, which the supervisor never needs to import.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import time
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import ctypes

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
_SECCOMP_MODE_FILTER = 2  # prctl(PR_SET_SECCOMP, mode, ...)
_SECCOMP_SET_MODE_FILTER = 1  # seccomp(operation, ...)
SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}  # the same numbers as seccomp_filter.SYSCALLS

# The options a platform's own seccomp policy may refuse (Lambda's is not published), by name.
PRCTL_OPTIONS = {
    "PR_SET_PDEATHSIG": PR_SET_PDEATHSIG,
    "PR_SET_DUMPABLE": PR_SET_DUMPABLE,
    "PR_SET_NAME": PR_SET_NAME,
    "PR_SET_SECCOMP": PR_SET_SECCOMP,
    "PR_SET_CHILD_SUBREAPER": PR_SET_CHILD_SUBREAPER,
    "PR_SET_NO_NEW_PRIVS": PR_SET_NO_NEW_PRIVS,
}

# Fields of /proc/<pid>/stat, counted from the state (field 3) since the name may hold spaces.
_STATE, _PPID, _STARTTIME = 0, 1, 19


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, with errno kept for us (ctypes is imported here: importing this module stays cheap)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg2: object = 0, arg3: object = 0) -> None:
    """prctl(option, arg2, arg3, 0, 0); raises OSError with the kernel's errno when refused."""
    import ctypes

    args = [ctypes.c_ulong(arg) if isinstance(arg, int) else arg for arg in (arg2, arg3)]
    if libc().prctl(ctypes.c_int(option), *args, ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}) refused: {os.strerror(err)}")


def allowed(option: int, arg2: int) -> bool:
    """Try prctl(option, arg2): True if the kernel (and any seccomp policy above us) accepted it."""
    try:
        prctl(option, arg2)
    except OSError:
        return False
    return True


def install_filter(
    program: bytes, *, set_no_new_privs: bool = True, via: Literal["any", "prctl", "syscall"] = "any"
) -> None:
    """Load `program` for the calling thread and all it forks or execs from now on; OSError if refused.

    Call it before any other thread starts (a forked child, a preexec_fn); a process that drops its
    privileges first should call `libc()` before, since ctypes may not be importable afterwards.
    Unprivileged processes may only load a filter with no_new_privs set, so it is set first unless
    `set_no_new_privs=False` (the caller then needs CAP_SYS_ADMIN). prctl(PR_SET_SECCOMP) is tried first,
    then the seccomp() syscall, since a platform policy may refuse one and not the other.
    """
    import ctypes  # here, not at import: importing this module stays cheap

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    if not program or len(program) % 8:
        raise ValueError(f"a seccomp program is a non-empty multiple of 8 bytes, not {len(program)}")
    if set_no_new_privs and libc().prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1:
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    refusal = OSError(errno.ENOSYS, f"no way to load a seccomp filter on {os.uname().machine}")
    if via in ("any", "prctl"):
        try:
            prctl(PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog))
            return
        except OSError as exc:
            refusal = exc
    number = SECCOMP_SYSCALL.get(os.uname().machine)
    if via in ("any", "syscall") and number is not None:
        args = (ctypes.c_long(number), ctypes.c_long(_SECCOMP_SET_MODE_FILTER), ctypes.c_long(0))
        if libc().syscall(*args, ctypes.byref(fprog)) == 0:
            return
        err = ctypes.get_errno()
        refusal = OSError(err, f"seccomp() refused: {os.strerror(err)}")
    raise refusal


def proc_table() -> dict[int, list[str]]:
    """pid -> /proc/<pid>/stat fields from the state on, for every process visible now."""
    table: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError), open(f"/proc/{entry}/stat") as handle:
                table[int(entry)] = handle.read().rsplit(")", 1)[1].split()
    return table


def descendants(root: int, table: dict[int, list[str]] | None = None) -> list[tuple[int, list[str]]]:
    """(pid, stat fields) of every process that has `root` as an ancestor."""
    stats = proc_table() if table is None else table
    found = []
    for pid, fields in stats.items():
        cursor, hops = int(fields[_PPID]), 0
        while cursor > 1 and cursor != root and hops < 64:
            cursor, hops = (int(stats[cursor][_PPID]) if cursor in stats else 0), hops + 1
        if cursor == root and pid != root:
            found.append((pid, fields))
    return found


def self_and_ancestors() -> set[int]:
    """This process and every process above it: a scan must never kill its own caller."""
    stats = proc_table()
    chain, cursor = set(), os.getpid()
    while cursor > 0 and cursor not in chain:
        chain.add(cursor)
        cursor = int(stats[cursor][_PPID]) if cursor in stats else 0
    return chain


def now_ticks() -> int:
    """The current time on the clock of /proc/<pid>/stat's start time (clock ticks since boot)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def start_ticks(pid: int) -> int:
    """When `pid` started, in clock ticks since boot."""
    with open(f"/proc/{pid}/stat") as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[_STARTTIME])


def _real_uid(pid: int) -> int | None:
    # The real uid from status, not the owner of /proc/<pid>: a process that makes itself non-dumpable
    # shows up as owned by root there and would hide from a scan.
    with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def started_since(uid: int, since: int, spare: Collection[int]) -> list[int]:
    """Live processes of real uid `uid` started at or after tick `since`, except those in `spare`.

    The way to find a job's processes when it has no uid of its own and nothing re-parents its daemons to
    us (no subreaper): every process of our uid started after the job did is the job's, provided nothing
    else of ours starts processes meanwhile (one job per uid at a time) and our own chain is spared.
    """
    found = []
    for pid, fields in proc_table().items():
        if pid in spare or fields[_STATE] in ("Z", "X") or int(fields[_STARTTIME]) < since:
            continue
        if _real_uid(pid) == uid:
            found.append(pid)
    return found


def kill_until_gone(find: Callable[[], Iterable[int]], timeout_s: float = 3.0) -> list[int]:
    """SIGKILL whatever `find` returns until it returns nothing; returns what is left at the timeout.

    A fork bomb racing us only wins a round: what it forked after our scan is found by the next one, its
    parents are dead, and RLIMIT_NPROC bounds how many there can be.
    """
    deadline = time.monotonic() + timeout_s
    alive = list(find())
    while alive and time.monotonic() < deadline:
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002)
        alive = list(find())
    return alive
