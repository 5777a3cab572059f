"""Worker side of one run: start the supervisor, pump capped output, relay stop requests, read its status."""

from __future__ import annotations

import array
import contextlib
import json
import logging
import marshal
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chalicelib.sandbox.grading import RawOutcome
from chalicelib.sandbox.models import SandboxUnavailable

SUPERVISOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "supervisor.py")
_POLL_S = 0.05
_DRAIN_S = 1.0  # after the supervisor is done, output still in the pipes is read for at most this long
_PROBE_KEYS = ("subreaper", "pdeathsig", "dumpable", "no_new_privs", "seccomp_prctl", "seccomp_syscall")

logger = logging.getLogger(__name__)
_reported_refusals: set[str] = set()  # each refused prctl is logged once per process, not once per job


@dataclass
class LaunchSpec:
    """Everything the supervisor needs; fds in `pass_fds` are closed by the caller after the run."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    wall_time_s: float
    output_bytes: int
    uid: int | None = None
    gid: int | None = None
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    cgroup_procs: list[str] = field(default_factory=list)
    seccomp_hex: str = ""
    exit_over_128_is_signal: bool = False
    pass_fds: tuple[int, ...] = ()
    slot_lock_fd: int | None = None  # the supervisor holds the slot until it exits
    pid_namespace: bool = False  # bubblewrap: the job's processes die with its pid namespace
    scan_allowed: bool = False  # no other job uses our uid: without a subreaper, kill by uid and start time
    stub_fds: tuple[int, int] | None = None  # a prepared sandbox: (our end, the stub's end) of its socket


class _Capture:
    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> bool:
        """Keep up to the cap; return True the first time the cap is exceeded."""
        room = self.cap - len(self.data)
        self.data += chunk[: max(room, 0)]
        if len(chunk) > room and not self.truncated:
            self.truncated = True
            return True
        return False


def memfd(name: str, content: bytes) -> int:
    """An anonymous file holding `content`, positioned at its start."""
    fd = os.memfd_create(name)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class NotStarted(SandboxUnavailable):
    """A prepared sandbox broke before the job reached it: the job may run elsewhere, it never ran here."""


class Supervisor:
    """A started supervisor process: its status socket, what it said so far, and the job's output pipes.

    Started directly (`stdin` given: the program starts at once) or as a prepared sandbox (`spec.stub_fds`:
    it reports "ready", then waits for `hand_over`).
    """

    def __init__(self, spec: LaunchSpec, stdin: bytes | None) -> None:
        self.spec = spec
        self.status = bytearray()
        self.status_eof = False
        status_ours, status_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control = status_ours
        stdin_fd = memfd("stdin", stdin) if stdin is not None else os.open(os.devnull, os.O_RDONLY)
        extra = (*spec.pass_fds, *([spec.slot_lock_fd] if spec.slot_lock_fd is not None else []))
        cfg = _config(spec, status_theirs.fileno())
        if spec.stub_fds is not None:
            extra += spec.stub_fds
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", SUPERVISOR, json.dumps(cfg)],
                stdin=stdin_fd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(status_theirs.fileno(), *extra),
                start_new_session=True,
                env={},
            )
        except OSError as exc:
            status_ours.close()
            raise SandboxUnavailable(f"cannot start the sandbox supervisor: {exc}") from exc
        finally:
            status_theirs.close()
            os.close(stdin_fd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_status(self, timeout_s: float) -> None:
        """Take in what the supervisor said within `timeout_s` (0: only what is there already)."""
        if self.status_eof:
            return
        ready, _, _ = select.select([self.control], [], [], timeout_s)
        while ready:
            try:
                chunk = self.control.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not chunk:
                self.status_eof = True
                return
            self.status += chunk

    def lines(self) -> list[str]:
        return self.status.decode("utf-8", "replace").splitlines()

    def has_final_status(self) -> bool:
        """The supervisor's last word (the run's status or an error) has arrived in full."""
        lines = self.status.split(b"\n")
        return len(lines) > 1 and lines[-1] == b"" and lines[-2] not in (b"ready", b"started")

    @property
    def is_ready(self) -> bool:
        """A prepared sandbox that reported ready, and nothing else, and still runs."""
        return self.lines() == ["ready"] and not self.status_eof and self.proc.poll() is None

    @property
    def is_broken(self) -> bool:
        return self.status_eof or self.proc.poll() is not None or any(line != "ready" for line in self.lines())

    def output_pending(self) -> bool:
        """Whether anything came out on stdout or stderr (a prepared sandbox must not have said a word)."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stdout, self.proc.stderr], [], [], 0)
        return bool(ready)

    def hand_over(self, payload: bytes, stdin: bytes, wall_time_s: float) -> None:
        """Give a ready prepared sandbox its job: the job for the stub (a memfd), stdin and the wall time."""
        fds = [memfd("job", payload), memfd("stdin", stdin)]
        try:
            message = marshal.dumps({"wall_time_s": wall_time_s})
            self.control.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        except OSError as exc:
            raise NotStarted(f"the prepared sandbox is gone: {exc}") from exc
        finally:
            for fd in fds:
                os.close(fd)

    def collect(self, cancel: threading.Event | None) -> RawOutcome:
        """Pump output and status until the supervisor is done, then drain what is left (briefly)."""
        return _collect(self, cancel)

    def close(self) -> None:
        """Make sure the supervisor is gone (killing it if needed) and release our ends."""
        self.control.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def discard(self) -> None:
        """End a prepared sandbox that never got a job: closing the status socket tells the supervisor."""
        self.control.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _config(spec: LaunchSpec, status_fd: int) -> dict[str, Any]:
    return {
        "argv": spec.argv,
        "env": spec.env,
        "cwd": spec.cwd,
        "uid": spec.uid,
        "gid": spec.gid,
        "rlimits": spec.rlimits,
        "cgroup_procs": spec.cgroup_procs,
        "seccomp_hex": spec.seccomp_hex,
        "wall_time_s": spec.wall_time_s,
        "exit_over_128_is_signal": spec.exit_over_128_is_signal,
        "status_fd": status_fd,
        "slot_lock_fd": spec.slot_lock_fd,
        "parent_pid": os.getpid(),
        "pid_namespace": spec.pid_namespace,
        "scan_allowed": spec.scan_allowed,
        "stub_parent_fd": spec.stub_fds[0] if spec.stub_fds else None,
        "stub_fd": spec.stub_fds[1] if spec.stub_fds else None,
    }


def run_supervised(spec: LaunchSpec, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
    """Run one job under a fresh supervisor and return what happened (never raises for user faults)."""
    supervisor = Supervisor(spec, stdin)
    try:
        return supervisor.collect(cancel)
    finally:
        supervisor.close()


def _collect(supervisor: Supervisor, cancel: threading.Event | None) -> RawOutcome:
    proc, spec = supervisor.proc, supervisor.spec
    assert proc.stdout is not None and proc.stderr is not None
    pump = _Pump(supervisor, spec.output_bytes)
    backstop = time.monotonic() + spec.wall_time_s + 15  # the supervisor itself hung: a platform fault
    # Done when the supervisor has said its last line and the job's output is closed; the supervisor's
    # own exit (the end of its status socket) is not waited for here.
    while pump.selector.get_map() and not (supervisor.has_final_status() and pump.outputs_closed()):
        now = time.monotonic()
        if pump.status_done_at is not None and now - pump.status_done_at > _DRAIN_S:
            break  # something still holds the pipes; the slot cleanup will kill it
        if now > backstop:
            proc.kill()
            raise SandboxUnavailable("sandbox supervisor did not finish")
        if cancel is not None and cancel.is_set():
            pump.stop(signal.SIGUSR1)
        pump.poll()
    pump.selector.close()
    out, err = pump.captures[proc.stdout.fileno()], pump.captures[proc.stderr.fileno()]
    return _outcome(bytes(supervisor.status), out, err)


class _Pump:
    def __init__(self, supervisor: Supervisor, cap: int) -> None:
        proc = supervisor.proc
        assert proc.stdout is not None and proc.stderr is not None
        self.supervisor = supervisor
        self.status_fd = supervisor.control.fileno()
        self.captures = {proc.stdout.fileno(): _Capture(cap), proc.stderr.fileno(): _Capture(cap)}
        self.status_done_at: float | None = time.monotonic() if supervisor.status_eof else None
        self.stop_sent = False
        self.pending_stop: int | None = None  # a stop asked for before the supervisor installed handlers
        # A prepared sandbox's supervisor said "ready" long ago; stop requests are safe once it "started".
        self.marker = b"started\n" if spec_is_prepared(supervisor.spec) else b"ready\n"
        self.selector = selectors.DefaultSelector()
        for fd in self.captures:
            self.selector.register(fd, selectors.EVENT_READ)
        if not supervisor.status_eof:
            self.selector.register(self.status_fd, selectors.EVENT_READ)

    def outputs_closed(self) -> bool:
        registered = self.selector.get_map()
        return not any(fd in registered for fd in self.captures)

    def stop(self, sig: int) -> None:
        """Ask the supervisor once to end the job (SIGUSR1: cancelled, SIGUSR2: output limit)."""
        if not self.stop_sent and not self.ready:
            self.pending_stop = self.pending_stop or sig
        elif not self.stop_sent:
            self.stop_sent = True
            with contextlib.suppress(OSError):
                self.supervisor.proc.send_signal(sig)

    @property
    def ready(self) -> bool:
        return self.marker in self.supervisor.status

    def poll(self) -> None:
        for key, _ in self.selector.select(_POLL_S):
            fd = int(key.fd)
            try:
                chunk = os.read(fd, 65536)
            except ConnectionResetError:  # the supervisor died with our message unread
                chunk = b""
            if not chunk:
                self.selector.unregister(fd)
                if fd == self.status_fd:
                    self.supervisor.status_eof = True
                    self.status_done_at = time.monotonic()
            elif fd == self.status_fd:
                self.supervisor.status += chunk
                if self.pending_stop is not None and self.ready:
                    self.stop(self.pending_stop)
            elif self.captures[fd].add(chunk):
                self.stop(signal.SIGUSR2)


def spec_is_prepared(spec: LaunchSpec) -> bool:
    return spec.stub_fds is not None


def _outcome(status: bytes, out: _Capture, err: _Capture) -> RawOutcome:
    text = status.decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip() and line not in ("ready", "started")]
    errors = [line for line in lines if line.startswith("error")]
    if errors and errors[0].startswith("error not started"):
        raise NotStarted(errors[0])
    if errors or not lines:
        raise SandboxUnavailable(errors[0] if errors else "sandbox supervisor died without a status")
    fields = json.loads(lines[-1])
    _report_refusals(fields.get("refused", []))
    return RawOutcome(
        exit_code=fields["exit_code"],
        signal=fields["signal"],
        wall_ms=fields["wall_ms"],
        cpu_ms=fields["cpu_ms"],
        max_rss_kb=fields["max_rss_kb"],
        killed_for=fields["killed_for"],
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
    )


def _report_refusals(refused: list[str]) -> None:
    new = sorted(set(refused) - _reported_refusals)
    if new:
        _reported_refusals.update(new)
        logger.warning("sandbox supervisor: the kernel refused prctl %s; running with what remains", new)


def probe_kernel(program: bytes) -> dict[str, bool]:
    """Which kernel calls the supervisor relies on are allowed here, asked of a throwaway supervisor.

    Keys: subreaper, pdeathsig, dumpable, no_new_privs, seccomp_prctl and seccomp_syscall (the filter
    `program` loaded through prctl, through seccomp()). Anything that goes wrong reads as "refused".
    """
    argv = [sys.executable, "-I", "-S", SUPERVISOR, "--probe", program.hex()]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, env={}, check=True)
        answer = json.loads(done.stdout)
        return {key: answer.get(key) is True for key in _PROBE_KEYS}
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        logger.warning("kernel probe failed, every call counts as refused: %s", exc)
        return dict.fromkeys(_PROBE_KEYS, False)
