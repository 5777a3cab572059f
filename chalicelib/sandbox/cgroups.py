"""cgroup v1 memory and pids limits for one job: a fresh group per run, removed afterwards.

A fresh group per job resets the counters (`memory.failcnt`, the OOM-kill count), so the `memory_limit`
verdict comes from the kernel rather than from guessing at exit codes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass


@dataclass
class CgroupRoot:
    """Where our groups live: `<root>/memory/<name>` and `<root>/pids/<name>`."""

    root: str = "/sys/fs/cgroup"
    name: str = "code-runner"

    def parent(self, controller: str) -> str:
        return os.path.join(self.root, controller, self.name)

    def probe(self) -> bool:
        """True when both controllers exist and we may create groups under them."""
        for controller, probe_file in (("memory", "memory.limit_in_bytes"), ("pids", "pids.max")):
            # The root group has no limit files (pids.max): look for them in our own parent group.
            try:
                os.makedirs(self.parent(controller), exist_ok=True)
            except OSError:
                return False
            if not os.path.exists(os.path.join(self.parent(controller), probe_file)):
                return False
        return True


class JobCgroup:
    """The memory and pids groups of one run."""

    def __init__(self, root: CgroupRoot, job_name: str, memory_mb: int | None, processes: int | None) -> None:
        self.memory = os.path.join(root.parent("memory"), job_name)
        self.pids = os.path.join(root.parent("pids"), job_name)
        for path in (self.memory, self.pids):
            os.makedirs(path, exist_ok=True)
        if memory_mb is not None and processes is not None:
            self.set_limits(memory_mb, processes)

    def set_limits(self, memory_mb: int, processes: int) -> None:
        """Limit the group (a prepared sandbox's group gets its job's limits when the job arrives).

        Lowering only: memory before memory+swap, which must never be below it (a new group has neither).
        """
        limit = str(memory_mb * 1024 * 1024)
        _write(self.memory, "memory.limit_in_bytes", limit)
        # Swap would let a job exceed its memory limit; the file exists only with swap accounting on.
        with contextlib.suppress(OSError):
            _write(self.memory, "memory.memsw.limit_in_bytes", limit)
        _write(self.pids, "pids.max", str(processes))

    @classmethod
    def fresh(cls, root: CgroupRoot, name: str, memory_mb: int | None, processes: int | None) -> JobCgroup:
        """A new group `name`, first removing a same-named one left behind (its members are killed).

        Without limits (None) the group is unlimited until `set_limits`."""
        stale = cls.__new__(cls)
        stale.memory = os.path.join(root.parent("memory"), name)
        stale.pids = os.path.join(root.parent("pids"), name)
        stale.remove()
        return cls(root, name, memory_mb, processes)

    @property
    def procs_files(self) -> list[str]:
        """Files a child writes its pid to, to join both groups."""
        return [os.path.join(self.memory, "cgroup.procs"), os.path.join(self.pids, "cgroup.procs")]

    def memory_hit(self) -> bool:
        """True when the group hit its memory limit hard enough that the kernel refused or killed."""
        oom_kills = 0
        with contextlib.suppress(OSError):
            for line in _read(self.memory, "memory.oom_control").splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    oom_kills = int(value)
        failcnt = int(_read(self.memory, "memory.failcnt") or 0)
        return oom_kills > 0 or failcnt > 0

    def max_usage_kb(self) -> int:
        """Peak memory of the whole group (page cache and tmpfs included)."""
        return int(_read(self.memory, "memory.max_usage_in_bytes") or 0) // 1024

    def members(self) -> list[int]:
        """Pids still in either group."""
        pids: set[int] = set()
        for procs in self.procs_files:
            with contextlib.suppress(OSError):
                pids.update(int(line) for line in _read(os.path.dirname(procs), "cgroup.procs").split())
        return sorted(pids)

    def remove(self) -> None:
        """Kill what is left and remove both groups; rmdir is retried while the kernel lets go of them."""
        deadline = time.monotonic() + 3
        for path in (self.memory, self.pids):
            while os.path.isdir(path):
                for pid in self.members():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    os.rmdir(path)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)


def _write(group: str, name: str, value: str) -> None:
    with open(os.path.join(group, name), "w") as handle:
        handle.write(value)


def _read(group: str, name: str) -> str:
    with open(os.path.join(group, name)) as handle:
        return handle.read()
