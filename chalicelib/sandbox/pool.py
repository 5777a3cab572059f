"""Warm sandboxes: everything about a run that does not depend on its job, prepared before the job arrives.

A prepared sandbox is a slot (its uid, host-wide lock and cgroup), a supervisor, and through bubblewrap
(its namespaces, tmpfs work dir and seccomp filter) the stub (stub.py), waiting as the slot uid for one
job. The job's critical path is then: set the cgroup's limits, hand the job to the stub, which writes the
files, applies the rlimits and execs the interpreter, run, collect. The interpreter itself is never started
early: the program sees exactly what a directly started one does (argv, __main__, environment, limits, uid).

Each prepared sandbox serves one job and is then destroyed with everything in it (processes, tmpfs,
namespaces, cgroup, work dir); a background thread tears used ones down and starts new ones, so neither
is on a job's path. A sandbox is health-checked when taken (its supervisor says "ready" and nothing else,
still runs, and nothing came out of it): a broken one is destroyed and the job takes another or starts
directly. A pool never takes the host's last free slot (`SlotPool.acquire(keep_free=1)`), so runs never
wait on idle sandboxes of other workers.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

from chalicelib.sandbox import kernel
from chalicelib.sandbox.grading import RawOutcome
from chalicelib.sandbox.models import SandboxUnavailable
from chalicelib.sandbox.process import NotStarted, Supervisor

if TYPE_CHECKING:
    from chalicelib.sandbox.local import Isolation, PreparedJob, SlotRun

logger = logging.getLogger(__name__)

READY_WAIT_S = 5.0  # a sandbox still starting is waited for this long, then a job starts one itself
_RETRY_MAX_S = 1.0  # with no slot to take, the refill tries again after at most this long


class PreparedSandbox:
    """A supervisor and its stub in a slot, waiting for one job."""

    def __init__(self, slot: SlotRun, supervisor: Supervisor) -> None:
        self.slot = slot
        self.supervisor = supervisor
        self.used = False

    def healthy(self, wait_s: float) -> bool:
        """Ready within `wait_s`, nothing but "ready" said, still running, not a byte of output."""
        deadline = time.monotonic() + wait_s
        supervisor = self.supervisor
        supervisor.read_status(0)
        while not supervisor.is_ready and not supervisor.is_broken:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            supervisor.read_status(left)
        return supervisor.is_ready and not supervisor.output_pending()

    def serve(self, job: PreparedJob, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
        """Run `job` here (once: the sandbox is destroyed afterwards). NotStarted if it never reached it."""
        self.used = True
        try:
            self.slot.limit(job)
        except OSError as exc:
            raise NotStarted(f"cannot limit the prepared sandbox's cgroup: {exc}") from exc
        limits = job.limits
        supervisor = self.supervisor
        supervisor.spec = dataclasses.replace(
            supervisor.spec, wall_time_s=limits.wall_time_s, output_bytes=limits.output_kb * 1024
        )
        supervisor.hand_over(self.slot.stub_job(job), stdin, limits.wall_time_s)
        raw = supervisor.collect(cancel)
        raw.memory_hit = self.slot.memory_hit()
        return raw

    def processes(self, table: dict[int, list[str]]) -> set[tuple[int, int]]:
        """(pid, start time in ticks) of the supervisor and everything under it."""
        pids = [self.supervisor.pid, *(child for child, _ in kernel.descendants(self.supervisor.pid, table))]
        found = set()
        for pid in pids:
            with contextlib.suppress(OSError):
                found.add((pid, kernel.start_ticks(pid)))
        return found

    def destroy(self, isolation: Isolation) -> None:
        """End it and leave nothing: processes, cgroup and work dir go, then the slot is free."""
        try:
            if self.used:
                self.supervisor.close()
            else:
                self.supervisor.discard()
            self.slot.cleanup()
        except OSError:
            logger.exception("cleaning up a sandbox of slot %s failed", self.slot.held.number)
        finally:
            isolation.slots.release(self.slot.held)


class SandboxPool:
    """Up to `pool_size` prepared sandboxes of one isolation, refilled after each use."""

    def __init__(self, isolation: Isolation) -> None:
        settings = isolation.settings
        self.isolation = isolation
        self.size = settings.pool_size
        self.keep_free = 1 if settings.pool_keeps_a_slot_free else 0
        self.background = settings.pool_refills_in_background
        self.stats: collections.Counter[str] = collections.Counter()
        self._cond = threading.Condition()
        self._idle: collections.deque[PreparedSandbox] = collections.deque()
        self._retired: list[PreparedSandbox] = []
        self._busy = 0  # teardowns and refills under way in the background
        self._active = False  # refill only once a job has asked (and not after `drain` until one asks again)
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(self.close)

    def start(self) -> None:
        """Start preparing sandboxes now, in the background, before any job asks (e.g. while one downloads)."""
        with self._cond:
            if self._thread is None and self.background:
                logger.info("sandbox pool: keeping %d prepared sandboxes ready", self.size)
            self._active = True
            self._start_thread()
            self._cond.notify_all()

    def take(self) -> PreparedSandbox | None:
        """A healthy prepared sandbox for one job, or None: then the job starts a sandbox itself."""
        self.start()
        while True:
            with self._cond:
                if not self._idle:
                    self.stats["missed"] += 1
                    return None
                sandbox = self._idle.popleft()
            if sandbox.healthy(READY_WAIT_S):
                self.stats["served"] += 1
                return sandbox
            self.stats["unhealthy"] += 1
            logger.warning("a prepared sandbox failed its health check: %s", bytes(sandbox.supervisor.status))
            self.retire(sandbox)

    def retire(self, sandbox: PreparedSandbox) -> None:
        """Destroy a used or broken sandbox: in the background (then refill), or now.

        Without bubblewrap a job writes to the host (its work dir, the shared /tmp): that is cleaned before
        its result is returned, as for a directly started run. Under bubblewrap everything the job could
        write died with its namespaces before the result came back: what is left (an empty cgroup, the
        slot's lock) is for the background.
        """
        later = self.background and sandbox.slot.use_bwrap
        if not later:
            sandbox.destroy(self.isolation)
        with self._cond:
            if later:
                self._retired.append(sandbox)
            self._cond.notify_all()

    def refill(self) -> int:
        """Start prepared sandboxes until the pool is full or no slot may be taken; how many were started.

        Starting does not wait for them to be ready: `take` checks that. Call it from a thread that lives
        as long as the process (the supervisors die with the thread that started them).
        """
        started = 0
        while not self._closed:
            with self._cond:
                if len(self._idle) >= self.size:
                    break
            sandbox = self._prepare()
            if sandbox is None:
                break
            with self._cond:
                self._idle.append(sandbox)
                self._cond.notify_all()
            started += 1
            self.stats["prepared"] += 1
        return started

    def _prepare(self) -> PreparedSandbox | None:
        from chalicelib.sandbox.local import SlotRun

        layers = self.isolation.layers()  # before taking a slot: the first probe runs in a slot of its own
        held = self.isolation.slots.acquire(keep_free=self.keep_free)
        if held is None:
            return None
        slot = SlotRun(self.isolation, held, layers)
        try:
            return PreparedSandbox(slot, slot.prepare())
        except SandboxUnavailable:
            logger.exception("cannot prepare a sandbox in slot %s", held.number)
            with contextlib.suppress(OSError):
                slot.cleanup()
            self.isolation.slots.release(held)
            return None

    def settle(self, wait_s: float = READY_WAIT_S) -> None:
        """Wait until every prepared sandbox is ready or found broken (broken ones are destroyed).

        The sandboxes are taken out while they are checked (a `take` meanwhile finds fewer), since only
        one thread at a time may use a sandbox.
        """
        deadline = time.monotonic() + wait_s
        with self._cond:
            checking, self._idle = list(self._idle), collections.deque()
        fine = []
        for sandbox in checking:
            if sandbox.healthy(max(0.0, deadline - time.monotonic())):
                fine.append(sandbox)
            else:
                self.stats["unhealthy"] += 1
                self.retire(sandbox)
        with self._cond:
            self._idle.extendleft(reversed(fine))
            self._cond.notify_all()

    def wait_filled(self, timeout_s: float) -> bool:
        """Start refilling if needed and wait until `size` sandboxes are prepared and ready (tests, benches)."""
        deadline = time.monotonic() + timeout_s
        self.start()
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._idle) >= self.size, timeout=timeout_s):
                return False
        self.settle(max(0.0, deadline - time.monotonic()))
        with self._cond:
            return len(self._idle) >= self.size

    def processes(self) -> set[tuple[int, int]]:
        """(pid, start ticks) of every process the idle prepared sandboxes consist of (after `settle`).

        The one set of processes a Lambda handler must spare when it kills what jobs left behind.
        """
        self.settle()
        table = kernel.proc_table()
        with self._cond:
            idle = list(self._idle)
        return set().union(*(sandbox.processes(table) for sandbox in idle))

    def paths(self) -> list[str]:
        """Host paths the idle prepared sandboxes use (their work dirs, the slot locks), to spare when
        wiping a scratch dir."""
        with self._cond:
            dirs = [sandbox.slot.workdir for sandbox in self._idle if not sandbox.slot.use_bwrap]
        return [*dirs, self.isolation.settings.lock_dir]

    def drain(self) -> None:
        """Destroy every prepared sandbox and wait for teardowns; refills resume with the next `take`."""
        with self._cond:
            self._active = False
            while self._retired or self._busy:
                self._cond.wait()
            idle, self._idle = list(self._idle), collections.deque()
        for sandbox in idle:
            sandbox.destroy(self.isolation)

    def close(self) -> None:
        """Drain for good (at exit)."""
        self._closed = True
        self.drain()

    def _start_thread(self) -> None:
        if self.background and self._thread is None:
            self._thread = threading.Thread(target=self._keep_filled, name="sandbox-pool", daemon=True)
            self._thread.start()

    def _keep_filled(self) -> None:
        """The background thread: tear down what was used, keep the pool full. Lives as long as the process."""
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:
                    self._cond.wait_for(lambda: bool(self._retired), timeout=backoff)
                while not self._retired and not self._wants_more():
                    self._cond.wait()
                retired, self._retired = self._retired, []
                self._busy += 1
            try:
                backoff = self._tend(retired, backoff)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def _tend(self, retired: list[PreparedSandbox], backoff: float) -> float:
        """Destroy `retired` and refill; how long to wait before trying again when no slot could be taken."""
        try:
            for sandbox in retired:
                sandbox.destroy(self.isolation)
            starved = self._wants_more() and not self.refill()
        except Exception:  # noqa: BLE001 - the pool must outlive any one failure; runs start directly
            logger.exception("sandbox pool refill failed")
            return _RETRY_MAX_S
        return min(_RETRY_MAX_S, max(0.02, backoff * 2)) if starved else 0.0

    def _wants_more(self) -> bool:
        return self._active and not self._closed and len(self._idle) < self.size
