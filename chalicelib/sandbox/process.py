"""Worker side of one run: start the supervisor, pump capped output, relay stop requests, read its status."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
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


def _memfd(name: str, content: bytes) -> int:
    fd = os.memfd_create(name)
    os.write(fd, content)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_supervised(spec: LaunchSpec, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
    """Run one job under a fresh supervisor and return what happened (never raises for user faults)."""
    status_r, status_w = os.pipe()
    stdin_fd = _memfd("stdin", stdin)  # a file, not a pipe: a program that never reads cannot block us
    cfg: dict[str, Any] = {
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
        "status_fd": status_w,
        "slot_lock_fd": spec.slot_lock_fd,
        "parent_pid": os.getpid(),
        "pid_namespace": spec.pid_namespace,
        "scan_allowed": spec.scan_allowed,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", SUPERVISOR, json.dumps(cfg)],
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w, *spec.pass_fds, *([spec.slot_lock_fd] if spec.slot_lock_fd is not None else [])),
            start_new_session=True,
            env={},
        )
    except OSError as exc:
        os.close(status_r)
        raise SandboxUnavailable(f"cannot start the sandbox supervisor: {exc}") from exc
    finally:
        os.close(status_w)
        os.close(stdin_fd)
    try:
        return _collect(proc, status_r, spec, cancel)
    finally:
        os.close(status_r)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _collect(
    proc: subprocess.Popen[bytes], status_r: int, spec: LaunchSpec, cancel: threading.Event | None
) -> RawOutcome:
    """Pump output and status until the supervisor is done, then drain what is left (briefly)."""
    assert proc.stdout is not None and proc.stderr is not None
    pump = _Pump(proc, status_r, spec.output_bytes)
    backstop = time.monotonic() + spec.wall_time_s + 15  # the supervisor itself hung: a platform fault
    while pump.selector.get_map():
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
    return _outcome(bytes(pump.status), out, err)


class _Pump:
    def __init__(self, proc: subprocess.Popen[bytes], status_r: int, cap: int) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.status_r = status_r
        self.captures = {proc.stdout.fileno(): _Capture(cap), proc.stderr.fileno(): _Capture(cap)}
        self.status = bytearray()
        self.status_done_at: float | None = None
        self.stop_sent = False
        self.pending_stop: int | None = None  # a stop asked for before the supervisor installed handlers
        self.selector = selectors.DefaultSelector()
        for fd in (*self.captures, status_r):
            self.selector.register(fd, selectors.EVENT_READ)

    def stop(self, sig: int) -> None:
        """Ask the supervisor once to end the job (SIGUSR1: cancelled, SIGUSR2: output limit)."""
        if not self.stop_sent and not self.ready:
            self.pending_stop = self.pending_stop or sig
        elif not self.stop_sent:
            self.stop_sent = True
            with contextlib.suppress(OSError):
                self.proc.send_signal(sig)

    @property
    def ready(self) -> bool:
        return self.status.startswith(b"ready\n")

    def poll(self) -> None:
        for key, _ in self.selector.select(_POLL_S):
            fd = int(key.fd)
            chunk = os.read(fd, 65536)
            if not chunk:
                self.selector.unregister(fd)
                if fd == self.status_r:
                    self.status_done_at = time.monotonic()
            elif fd == self.status_r:
                self.status += chunk
                if self.pending_stop is not None and self.ready:
                    self.stop(self.pending_stop)
            elif self.captures[fd].add(chunk):
                self.stop(signal.SIGUSR2)


def _outcome(status: bytes, out: _Capture, err: _Capture) -> RawOutcome:
    text = status.decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip() and line != "ready"]
    errors = [line for line in lines if line.startswith("error")]
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
