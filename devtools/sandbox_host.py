"""What the Lambda and Fargate emulators share: the image's code on disk, uids leased host-wide, and
"containers" (one process tree as one uid, with its own /tmp, memory cap and platform seccomp policy).

Needs root (it switches uids, mounts and creates cgroups), like the local sandbox's full isolation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chalicelib.sandbox import hostclean
from chalicelib.sandbox.cgroups import CgroupRoot, JobCgroup
from devtools.sandbox_image import ROOT, build_code_dir

log = logging.getLogger("coderunner.emulators")

BASE = Path("/var/tmp/code-runner-emulators")  # not under /tmp: each container gets a /tmp of its own
LOCK_DIR = "/tmp/code-runner-slot-locks"  # the local sandbox's slot locks: uids are leased host-wide
LAUNCHER = Path(__file__).resolve().parent / "sandbox_launcher.py"
READONLY = ["/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue"]  # the host's other world-writable places
SYSTEM_PYTHON = "/usr/bin/python3"  # the image's interpreter (the venv's sits where other uids cannot go)
MAX_PROCESSES = 1024  # Lambda's per-environment cap on processes and threads


def can_emulate() -> str | None:
    """Why the emulators cannot run on this host, or None."""
    if os.geteuid() != 0:
        return "the Lambda and Fargate emulators switch uids and mount: they need root"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} (the sandbox image's Python) is missing"
    return None


class UidLease:
    """One uid of `range(first, first + count)`, held by an exclusive flock (host-wide) until `release`."""

    def __init__(self, first: int, count: int, wait_s: float = 30) -> None:
        os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
        deadline = time.monotonic() + wait_s
        while True:
            for uid in range(first, first + count):
                fd = os.open(os.path.join(LOCK_DIR, f"{uid}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self.uid, self._fd = uid, fd
                hostclean.kill_uid(uid)  # whatever a crashed holder left
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free uid in {first}..{first + count - 1}")
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Host:
    """One emulator run's directory: the image's code (shared by every container) and their /tmp dirs."""

    def __init__(self) -> None:
        BASE.mkdir(parents=True, exist_ok=True)
        os.chmod(BASE, 0o711)
        _remove_stale_runs()
        self.root = BASE / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.root.mkdir(mode=0o711)
        self.code = build_code_dir(self.root / "code")
        self.logs = self.root / "logs"
        self.logs.mkdir(mode=0o700)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _remove_stale_runs() -> None:
    for entry in BASE.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(entry, ignore_errors=True)


@dataclass
class Container:
    """One process started by the launcher as a leased uid, with its own /tmp and cgroups."""

    host: Host
    name: str
    lease: UidLease
    memory_mb: int
    deny_prctl: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    cgroup: JobCgroup | None = None
    log_file: IO[bytes] | None = None
    stopped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uid(self) -> int:
        return self.lease.uid

    @property
    def tmp(self) -> Path:
        return self.host.root / f"{self.name}-tmp"

    def start(self, argv: list[str], env: dict[str, str], cwd: str) -> subprocess.Popen[bytes]:
        hostclean.fresh_dir(str(self.tmp), self.uid, self.uid)
        self.cgroup = _cgroup(self.name, self.memory_mb)
        config = {
            "repo": str(ROOT),
            "uid": self.uid,
            "cgroup_procs": self.cgroup.procs_files if self.cgroup else [],
            "private_tmp": str(self.tmp),
            "readonly": READONLY,
            "deny_prctl": self.deny_prctl,
            "argv": argv,
            "env": env,
            "cwd": cwd,
        }
        self.log_file = open(self.host.logs / f"{self.name}.log", "ab")  # noqa: SIM115 - closed by `stop`
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(LAUNCHER)],
            stdin=subprocess.PIPE,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(config).encode())
        self.proc.stdin.close()
        return self.proc

    def memory_hit(self) -> bool:
        """Whether the container hit its memory cap (False once its cgroup is gone)."""
        try:
            return bool(self.cgroup and self.cgroup.memory_hit())
        except OSError:
            return False

    def stop(self) -> None:
        """Kill every process of the container, remove its cgroups and /tmp, give the uid back (once)."""
        with self._lock:
            if self.stopped:
                return
            self.stopped = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.kill()
        if hostclean.kill_uid(self.uid):
            log.error("processes of uid %s survived the container's end", self.uid)
        if self.proc is not None:
            self.proc.wait()
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.remove()
        hostclean.remove_tree(str(self.tmp))
        if self.log_file is not None:
            self.log_file.close()
        self.lease.release()

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            text = (self.host.logs / f"{self.name}.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""


def _cgroup(name: str, memory_mb: int) -> JobCgroup | None:
    root = CgroupRoot(name="code-runner-emulators")
    if not root.probe():
        log.warning("no cgroup v1 memory/pids here: the emulated %s has no memory cap", name)
        return None
    return JobCgroup.fresh(root, name, memory_mb, MAX_PROCESSES)
