"""Per-job supervisor process: a child subreaper that starts the user's program and ends its whole tree.

Run as `python -I -S supervisor.py CONFIG_JSON` with stdio wired to the job and the status pipe on
`status_fd`. Standard library only, so it starts in milliseconds and never imports our venv's packages.
It runs as the worker's user (root locally): the job runs as the slot uid, so user code cannot signal it.
One JSON line goes to the status pipe at the end; a line starting with "error" means the platform failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _prctl(option: int, arg: int | ctypes.c_void_p) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _install_seccomp(program: bytes) -> None:
    """Load a classic BPF program (8 bytes per instruction) for this process and what it execs."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter refused")


def _exec_child(cfg: dict[str, Any]) -> None:
    """In the forked child: join cgroups, apply limits, drop to the slot uid, exec. Never returns."""
    try:
        os.setsid()
        for procs in cfg["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cfg["seccomp_hex"]:
            _install_seccomp(bytes.fromhex(cfg["seccomp_hex"]))
        os.chdir(cfg["cwd"])
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - anything here is a platform fault, reported then exit
        os.write(cfg["status_fd"], f"error cannot start the job: {exc!r}\n".encode())
    os._exit(127)


class _Job:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.pid = 0
        self.killed_for: str | None = None
        self.cpu_ms_at_stop = 0

    def stop(self, reason: str) -> None:
        if self.killed_for is None:
            self.killed_for = reason
            # Processes killed inside a dying pid namespace are reaped without being added to our
            # RUSAGE_CHILDREN, so read the tree's CPU time before killing it.
            self.cpu_ms_at_stop = _tree_cpu_ms()
        self.kill_tree()

    def kill_tree(self) -> None:
        if self.pid <= 0:
            return
        if self.cfg["uid"] is not None:
            self._kill_as_slot_uid()
        self._kill_cgroup_members()
        self._kill_descendants()

    def _kill_as_slot_uid(self) -> None:
        # kill(-1) from a process of the slot uid reaches every process of that uid in one atomic sweep,
        # including daemons that left our tree and fork bombs racing us.
        helper = os.fork()
        if helper == 0:
            try:
                os.setgid(self.cfg["gid"])
                os.setuid(self.cfg["uid"])
                os.kill(-1, signal.SIGKILL)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(helper, 0)

    def _kill_cgroup_members(self) -> None:
        for procs in self.cfg["cgroup_procs"]:
            try:
                with open(procs) as handle:
                    members = [int(line) for line in handle if line.strip()]
            except OSError:
                continue
            for pid in members:
                _kill_quietly(pid)

    def _kill_descendants(self) -> None:
        for pid, _ in _descendants():
            _kill_quietly(pid)


def _descendants() -> list[tuple[int, list[str]]]:
    """(pid, /proc/pid/stat fields after the name) of every process that has us as an ancestor.

    Without a uid of its own (Lambda) this is the job's tree; as a subreaper, orphans re-parent to us,
    so double-forked daemons stay in it.
    """
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stats[int(entry)] = handle.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
    me = os.getpid()
    found = []
    for pid, fields in stats.items():
        seen, cursor = 0, int(fields[1])
        while cursor > 1 and cursor != me and seen < 64:
            cursor, seen = (int(stats[cursor][1]) if cursor in stats else 0), seen + 1
        if cursor == me:
            found.append((pid, fields))
    return found


def _tree_cpu_ms() -> int:
    """utime + stime (+ their reaped children's) of our live descendants, from /proc, in milliseconds."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for _, fields in _descendants())
    return int(ticks * 1000 / os.sysconf("SC_CLK_TCK"))


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _reap_all(job: _Job) -> None:
    """Wait for every descendant (they re-parent to us), re-killing until none is left or 3 s pass."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            job.kill_tree()
            time.sleep(0.005)


def _status(job: _Job, wait_status: int, wall_ms: int) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    exit_code: int | None = None
    sig: int | None = None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
    else:
        exit_code = os.WEXITSTATUS(wait_status)
        # bubblewrap reports a signalled child as 128 + signal, like a shell does.
        if job.cfg["exit_over_128_is_signal"] and 128 < exit_code < 128 + 65:
            sig = exit_code - 128
            exit_code = None
    return {
        "exit_code": exit_code,
        "signal": sig,
        "wall_ms": wall_ms,
        "cpu_ms": max(int((usage.ru_utime + usage.ru_stime) * 1000), job.cpu_ms_at_stop),
        "max_rss_kb": usage.ru_maxrss,
        "killed_for": job.killed_for,
    }


def main() -> None:
    """Start the job, enforce wall time and stop requests, end the tree, report one status line."""
    cfg = json.loads(sys.argv[1])
    os.set_inheritable(cfg["status_fd"], False)  # the user's program must never hold our status pipe
    if cfg.get("slot_lock_fd") is not None:
        os.set_inheritable(cfg["slot_lock_fd"], False)  # we hold the slot; the user's program must not
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    job = _Job(cfg)
    signal.signal(signal.SIGUSR1, lambda *_: job.stop("cancelled"))
    signal.signal(signal.SIGTERM, lambda *_: job.stop("cancelled"))
    # If the worker dies mid-run nobody wants the result: end the job now rather than at its wall time.
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if cfg.get("parent_pid") and os.getppid() != cfg["parent_pid"]:
        return  # the worker died before we could ask to be told
    signal.signal(signal.SIGUSR2, lambda *_: job.stop("output_limit"))
    signal.signal(signal.SIGALRM, lambda *_: job.stop("wall_time"))
    os.write(cfg["status_fd"], b"ready\n")  # stop requests are safe from now on
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _exec_child(cfg)
    job.pid = pid
    if job.killed_for is not None:  # a stop request arrived before we knew the pid
        job.kill_tree()
    # Only the job keeps the output pipes: when it is gone the worker sees EOF.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.setitimer(signal.ITIMER_REAL, cfg["wall_time_s"])
    _, wait_status, _ = os.wait4(pid, 0)
    wall_ms = int((time.monotonic() - started) * 1000)
    signal.setitimer(signal.ITIMER_REAL, 0)
    # The job ends when its main process ends; daemons it left behind go with it.
    job.kill_tree()
    _reap_all(job)
    os.write(cfg["status_fd"], (json.dumps(_status(job, wait_status, wall_ms)) + "\n").encode())


if __name__ == "__main__":
    main()
