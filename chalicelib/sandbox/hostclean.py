"""Host-side cleanup between jobs: no process of a slot uid and no file of a job may outlive it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple


class HeldSlot(NamedTuple):
    number: int
    lock_fd: int  # keep it open in every process that still uses the slot


class SlotPool:
    """Concurrent runs each take a slot: its own uid, host work dir and cgroup names.

    Slots are host-wide, not per process: a slot is held by an exclusive `flock` on its lock file, so two
    worker processes (or two isolations in one process) never share a uid. Sharing one would be fatal:
    the cleanup of one job kills every process of its uid, the other job's included.
    """

    def __init__(self, size: int, key_base: int = 0, lock_dir: str = "/tmp/code-runner-slot-locks") -> None:
        self.size, self.key_base, self.lock_dir = size, key_base, lock_dir

    @contextlib.contextmanager
    def slot(self) -> Iterator[HeldSlot]:
        """Block until a slot is free (host-wide), hold it for the run.

        The lock's descriptor is handed to the run's supervisor too: a worker killed mid-run then does not
        free its slot while its supervisor (and the job it is ending) still use the slot's uid.
        """
        while (held := self.acquire()) is None:
            time.sleep(0.02)
        try:
            yield held
        finally:
            self.release(held)

    def acquire(self, keep_free: int = 0) -> HeldSlot | None:
        """A free slot, or None at once if none is; with `keep_free`, None unless that many others stay free.

        `keep_free` is what a pool of prepared sandboxes uses: it never takes the host's last free slot, so
        a run that waits for a slot only ever waits for runs (bounded by their wall time), never for idle
        prepared sandboxes. Pools serialise their checks under `pool.lock` (a run does not need it).
        """
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        if not keep_free:
            return self._first_free(range(self.size))
        guard = os.open(os.path.join(self.lock_dir, "pool.lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            held = self._first_free(range(self.size))
            if held is None:
                return None
            spare: list[HeldSlot] = []
            others = [index for index in range(self.size) if index != held.number]
            while len(spare) < keep_free and (found := self._first_free(others)) is not None:
                spare.append(found)
                others.remove(found.number)
            for other in spare:
                self.release(other)
            if len(spare) < keep_free:
                self.release(held)
                return None
            return held
        finally:
            os.close(guard)  # and with it the pools' lock

    def release(self, held: HeldSlot) -> None:
        """Give the slot back (closing our descriptor releases the lock once no supervisor holds it)."""
        os.close(held.lock_fd)

    def _first_free(self, indexes: Iterable[int]) -> HeldSlot | None:
        for index in indexes:
            fd = os.open(os.path.join(self.lock_dir, f"{self.key_base + index}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return HeldSlot(index, fd)
        return None


def pids_of_uid(uid: int) -> list[int]:
    """Processes whose real uid is `uid` (zombies included: they still count against RLIMIT_NPROC)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{entry}/status") as handle:
            for line in handle:
                if line.startswith("Uid:"):
                    if int(line.split()[1]) == uid:
                        found.append(int(entry))
                    break
    return found


def kill_uid(uid: int, timeout_s: float = 3.0) -> list[int]:
    """SIGKILL every process of `uid` until none is left; returns the pids still alive at the timeout."""
    deadline = time.monotonic() + timeout_s
    alive = pids_of_uid(uid)
    while alive and time.monotonic() < deadline:
        for pid in alive:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
        alive = pids_of_uid(uid)
    return alive


def remove_tree(path: str) -> None:
    """Remove a work dir without following links: a planted symlink is unlinked, never traversed."""
    if os.path.islink(path):
        os.unlink(path)
    elif os.path.isdir(path):
        # shutil.rmtree uses the fd-based walk on Linux (`avoids_symlink_attacks`), so links inside the
        # tree are removed as links.
        assert shutil.rmtree.avoids_symlink_attacks
        shutil.rmtree(path, ignore_errors=False)
    elif os.path.lexists(path):
        os.unlink(path)


def fresh_dir(path: str, uid: int | None, gid: int | None) -> None:
    """Create an empty dir owned by the slot uid (mode 0700), removing whatever was there."""
    remove_tree(path)
    os.makedirs(path, mode=0o700)
    if uid is not None and gid is not None:
        os.chown(path, uid, gid)


def sweep_shared_tmp(uid: int, roots: tuple[str, ...] = ("/tmp", "/var/tmp", "/dev/shm")) -> None:
    """Remove top-level entries a slot uid left in world-writable dirs (only when no private /tmp)."""
    for root in roots:
        with contextlib.suppress(OSError):
            for entry in os.scandir(root):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid == uid:
                        remove_tree(entry.path)
