"""Per-job supervisor process: it starts the user's program and ends its whole tree.

Run as `python -I -S supervisor.py CONFIG_JSON` with stdio wired to the job and the status socket on
`status_fd`. Standard library and our own stdlib-only `kernel` module only, so it starts in milliseconds and
never imports our venv's packages. It runs as the worker's user (root locally, where the job runs as the slot
uid and cannot signal it; the same uid in Lambda and Fargate).
One JSON line goes to the status pipe at the end, saying which prctl calls the kernel refused; a line
starting with "error" means the platform failed. `supervisor.py --probe PROGRAM_HEX` instead reports which of
the kernel calls the sandbox relies on this host allows.

With `stub_fd` in the config the supervisor starts a prepared sandbox (see `pool.py`): its child becomes
`stub.py` (through bubblewrap, as the slot uid, under seccomp) instead of the program. It reports "ready"
once the stub is, then waits for the job on the status socket (the wall time, and two descriptors that it
hands to the stub: the job and its stdin), says "started" and from then on is the same supervisor as for a
program started directly. The worker closing the status socket before sending a job discards the sandbox.

A refused prctl is not fatal where the guarantee holds without it. PR_SET_CHILD_SUBREAPER keeps a job's
daemons in our tree; without it, the job runs in its own session and process group, and when it has no uid
of its own the worker lets us (`scan_allowed`: one job per uid) kill every process of our uid started after
us. PR_SET_PDEATHSIG only ends a job early when the worker dies (the wall time still ends it).
"""

from __future__ import annotations

import _socket
import contextlib
import json
import marshal
import os
import resource
import select
import signal
import sys
import time
from typing import Any, Literal

if __name__ == "__main__":  # run as a script under -I: the repo root is not on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from chalicelib.sandbox import kernel  # noqa: E402


def _exec_child(cfg: dict[str, Any]) -> None:
    """In the forked child: join cgroups, apply limits, drop to the slot uid, exec. Never returns."""
    try:
        os.setsid()  # its own session and process group, which kill_tree can signal in one call
        for procs in cfg["cgroup_procs"]:
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        for name, (soft, hard) in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        # libc and ctypes were loaded before the fork (the slot uid may not be able to import them now).
        kernel.allowed(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)  # refused: the supervisor reports it
        if cfg["seccomp_hex"]:  # asked for, so required: never exec without it
            kernel.install_filter(bytes.fromhex(cfg["seccomp_hex"]))
        os.chdir(cfg["cwd"])
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - anything here is a platform fault, reported then exit
        os.write(cfg["status_fd"], f"error cannot start the job: {exc!r}\n".encode())
    os._exit(127)


class _Job:
    def __init__(self, cfg: dict[str, Any], subreaper: bool) -> None:
        self.cfg = cfg
        self.pid = 0
        self.killed_for: str | None = None
        self.cpu_ms_at_stop = 0
        # Without a subreaper, daemons leave our tree: find them by uid and start time, if we may.
        self.scan = not subreaper and cfg["uid"] is None and cfg["scan_allowed"]
        self.spare = kernel.self_and_ancestors() if self.scan else set()
        self.since = kernel.start_ticks(os.getpid())

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
        _kill_quietly(-self.pid)  # the job's process group: atomic against forks inside it
        self._kill_cgroup_members()
        for pid in self.strays():
            _kill_quietly(pid)

    def end(self) -> None:
        """The main process has exited: end what it left behind.

        In bubblewrap's pid namespace nothing is left: its init exits only once the kernel has killed and
        reaped every process of the namespace, and no process can leave a pid namespace. The slot's cleanup
        kills the uid once more before the slot is used again, off the job's path.
        """
        if self.cfg["pid_namespace"]:
            _kill_quietly(-self.pid)
            self._kill_cgroup_members()
        else:
            self.kill_tree()

    def strays(self) -> list[int]:
        """Live processes of the job that are not our children: descendants, or the uid scan's finds."""
        found = [pid for pid, fields in kernel.descendants(os.getpid()) if fields[0] not in ("Z", "X")]
        if self.scan:
            found += kernel.started_since(os.getuid(), self.since, self.spare)
        return found

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


def _tree_cpu_ms() -> int:
    """utime + stime (+ their reaped children's) of our live descendants, from /proc, in milliseconds."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for _, fields in kernel.descendants(os.getpid()))
    return int(ticks * 1000 / os.sysconf("SC_CLK_TCK"))


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


class _Late(Exception):
    pass


def _raise_late(*_: object) -> None:
    raise _Late


def _await_namespace(job: _Job) -> None:
    """Wait (at most 1 s) for what is left of bubblewrap's pid namespace to go: nothing to kill there.

    bubblewrap's outer process exits as soon as its init reports the program's status; the init (then ours:
    we are the subreaper) exits once the kernel has killed and reaped everything else in the namespace.
    Waiting for that in `waitpid` costs no scans, no forks and no polling.
    """
    if not job.cfg["pid_namespace"]:
        return
    signal.signal(signal.SIGALRM, _raise_late)
    signal.setitimer(signal.ITIMER_REAL, 1)
    try:
        while True:
            os.waitpid(-1, 0)
    except (ChildProcessError, _Late):
        pass
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _reap_all(job: _Job) -> None:
    """Reap our children and re-kill the job's processes until none is left or 3 s pass."""
    _await_namespace(job)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        # Without children a subreaper has no descendants left; only the uid scan can find more.
        if not _reap_children() and not (job.scan and job.strays()):
            return
        job.kill_tree()
        time.sleep(0.005)


def _reap_children() -> bool:
    """Reap every child that has exited; True while some child is still alive."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        return False
    return True


def _status(job: _Job, wait_status: int, wall_ms: int, refused: list[str], stub_cpu_ms: int) -> dict[str, Any]:
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
        # A prepared sandbox's program is its stub after exec: the stub's own start-up is not the job's.
        "cpu_ms": max(int((usage.ru_utime + usage.ru_stime) * 1000), job.cpu_ms_at_stop, stub_cpu_ms) - stub_cpu_ms,
        "max_rss_kb": usage.ru_maxrss,
        "killed_for": job.killed_for,
        "refused": refused,
    }


def probe(program_hex: str) -> dict[str, bool]:
    """Which kernel calls the sandbox relies on are allowed here (run in a throwaway process).

    The same process shape as a supervisor, so it sees the same policy (e.g. Lambda's own seccomp filter).
    Setting no_new_privs is what lets an unprivileged process load a filter, so seccomp is tried after it.
    """
    found = {
        "subreaper": kernel.allowed(kernel.PR_SET_CHILD_SUBREAPER, 1),
        "pdeathsig": kernel.allowed(kernel.PR_SET_PDEATHSIG, signal.SIGTERM),
        "dumpable": kernel.allowed(kernel.PR_SET_DUMPABLE, 0),
        "no_new_privs": kernel.allowed(kernel.PR_SET_NO_NEW_PRIVS, 1),
    }
    found["no_new_privs"] = found["no_new_privs"] or kernel.libc().prctl(kernel.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1
    program = bytes.fromhex(program_hex)
    found["seccomp_prctl"] = _loads(program, "prctl")
    found["seccomp_syscall"] = _loads(program, "syscall")
    return found


def _loads(program: bytes, via: Literal["prctl", "syscall"]) -> bool:
    try:
        kernel.install_filter(program, via=via)
    except OSError:
        return False
    return True


def _start(cfg: dict[str, Any]) -> tuple[_Job, list[str]] | None:
    """Become the job's reaper and the worker's dependant where the kernel allows; None if the worker died."""
    subreaper = kernel.allowed(kernel.PR_SET_CHILD_SUBREAPER, 1)
    job = _Job(cfg, subreaper)
    if not subreaper and cfg["uid"] is None and not cfg["pid_namespace"] and not job.scan:
        os.write(cfg["status_fd"], b"error PR_SET_CHILD_SUBREAPER refused and no other way to end the job\n")
        return None
    signal.signal(signal.SIGUSR1, lambda *_: job.stop("cancelled"))
    signal.signal(signal.SIGTERM, lambda *_: job.stop("cancelled"))
    # If the worker dies mid-run nobody wants the result: end the job now rather than at its wall time.
    pdeathsig = kernel.allowed(kernel.PR_SET_PDEATHSIG, signal.SIGTERM)
    if cfg.get("parent_pid") and os.getppid() != cfg["parent_pid"]:
        return None  # the worker died before we could ask to be told
    refused = [name for name, ok in (("subreaper", subreaper), ("pdeathsig", pdeathsig)) if not ok]
    return job, refused


def _say(fd: int, line: bytes) -> None:
    """One status line to the worker; a worker that is gone (killed) no longer listens."""
    with contextlib.suppress(OSError):
        os.write(fd, line)


class _Stub:
    """The supervisor's end of a prepared sandbox: the stub's socket, and the job handed over on ours."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.status_fd = cfg["status_fd"]
        self.control = _socket.socket(fileno=os.dup(cfg["status_fd"]))
        os.set_inheritable(cfg["stub_parent_fd"], False)  # the child keeps only the stub's end
        self.sock = _socket.socket(fileno=cfg["stub_parent_fd"])

    def hand_over(self) -> float | None:
        """Wait until the stub is ready, report it, wait for the job, give it to the stub; the wall time.

        None when there is nothing to run: the worker discarded the sandbox, or the stub died first
        ("error not started" then tells the worker that the job never reached it).
        """
        readable, _, _ = select.select([self.control, self.sock], [], [])
        if self.control in readable:
            return None  # discarded by the worker before the sandbox was even ready
        if _recv_quietly(self.sock) != b"ready":
            _say(self.status_fd, b"error not started: the prepared sandbox died before it was ready\n")
            return None
        _say(self.status_fd, b"ready\n")
        readable, _, _ = select.select([self.control, self.sock], [], [])
        if self.sock in readable:  # nothing is expected from the stub before its job: it died
            _say(self.status_fd, b"error not started: the prepared sandbox died while it waited\n")
            return None
        message, fds = _receive_fds(self.control)
        if not message:
            return None  # discarded by the worker
        try:
            go = marshal.loads(message)
            payload = b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds)
            self.sock.sendmsg([b"job"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)])
        except (OSError, ValueError, EOFError) as exc:
            _say(self.status_fd, f"error not started: the job did not reach the stub: {exc!r}\n".encode())
            return None
        finally:
            for fd in fds:
                os.close(fd)
        _say(self.status_fd, b"started\n")
        return float(go["wall_time_s"])

    def cpu_ms(self) -> int:
        """The stub's own CPU time before it exec'd the program; an error it reported goes to the status."""
        said = b""
        self.sock.setblocking(False)
        while chunk := _recv_quietly(self.sock):
            said += chunk
        cpu_us = 0
        if said.startswith(b"exec "):
            head, _, said = said.partition(b"error")
            cpu_us = int(head[5:].strip() or 0)
            said = b"error" + said if said else b""
        if said.startswith(b"error"):
            _say(self.status_fd, said.replace(b"\n", b" ") + b"\n")
        return cpu_us // 1000


def _recv_quietly(sock: _socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError:
        return b""


def _receive_fds(sock: _socket.socket) -> tuple[bytes, list[int]]:
    """One message and the descriptors that came with it (b"" at EOF)."""
    message, ancillary, _, _ = sock.recvmsg(4096, _socket.CMSG_SPACE(8 * 4))
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - len(data) % 4, 4)]
    return message, fds


def main() -> None:
    """Start the job, enforce wall time and stop requests, end the tree, report one status line."""
    if sys.argv[1] == "--probe":
        print(json.dumps(probe(sys.argv[2])))
        return
    cfg = json.loads(sys.argv[1])
    os.set_inheritable(cfg["status_fd"], False)  # the user's program must never hold our status socket
    if cfg.get("slot_lock_fd") is not None:
        os.set_inheritable(cfg["slot_lock_fd"], False)  # we hold the slot; the user's program must not
    stub = _Stub(cfg) if cfg.get("stub_fd") is not None else None
    started_job = _start(cfg)
    if started_job is None:
        return
    job, refused = started_job
    signal.signal(signal.SIGUSR2, lambda *_: job.stop("output_limit"))
    signal.signal(signal.SIGALRM, lambda *_: job.stop("wall_time"))
    if stub is None:
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
    wall_time_s = cfg["wall_time_s"]
    if stub is not None:
        os.close(cfg["stub_fd"])  # the stub's end lives on in the child only
        handed = stub.hand_over()
        if handed is None:
            job.kill_tree()
            _reap_all(job)
            return
        wall_time_s, started = handed, time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, wall_time_s)
    _, wait_status, _ = os.wait4(pid, 0)
    wall_ms = int((time.monotonic() - started) * 1000)
    signal.setitimer(signal.ITIMER_REAL, 0)
    # The job ends when its main process ends; daemons it left behind go with it.
    job.end()
    _reap_all(job)
    stub_cpu_ms = stub.cpu_ms() if stub is not None else 0
    status = _status(job, wait_status, wall_ms, refused, stub_cpu_ms)
    os.write(cfg["status_fd"], (json.dumps(status) + "\n").encode())


if __name__ == "__main__":
    main()
