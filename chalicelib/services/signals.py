"""Job change announcements between the threads of one process, and the polled stand-in used where nothing
can announce (AWS: a `GET ?wait` and a running job's watcher poll DynamoDB with a backoff, as before).

The local stack's announcements between processes (chalicelib/adapters/signals_local.py) build on
`InProcessSignals`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from chalicelib.services.ports import WaitChanged


class ChangeWatch:
    """One waiter's view of one job: `notify` marks a change, `wait` consumes it (or times out)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending = False
        self._closed = False

    def notify(self) -> None:
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """True if a change was announced since the last wait; False after `timeout_s` or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._closed, max(0.0, timeout_s))
            changed, self._pending = self._pending, False
            return changed


class PolledJobSignals:
    """Nothing announces changes: `wait_changed` just sleeps the caller's (backed-off) interval."""

    notifies = False

    def job_changed(self, job_id: str) -> None:
        """Nobody to tell."""

    @contextmanager
    def watch(self, job_id: str) -> Iterator[WaitChanged]:
        watch = ChangeWatch()
        try:
            yield watch.wait
        finally:
            watch.close()


class InProcessSignals:
    """Announcements between the threads of this process (a subclass carries them to other processes)."""

    notifies = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[str, set[ChangeWatch]] = {}

    def job_changed(self, job_id: str) -> None:
        self.deliver(job_id)

    def deliver(self, job_id: str) -> None:
        """Wake every watcher of `job_id` in this process."""
        with self._lock:
            watches = list(self._watches.get(job_id, ()))
        for watch in watches:
            watch.notify()

    def watching(self, job_id: str) -> bool:
        """Whether someone in this process watches `job_id` now."""
        with self._lock:
            return bool(self._watches.get(job_id))

    @contextmanager
    def watch(self, job_id: str) -> Iterator[WaitChanged]:
        self.before_watch()
        watch = ChangeWatch()
        with self._lock:
            self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch.wait
        finally:
            with self._lock:
                mine = self._watches.get(job_id, set())
                mine.discard(watch)
                if not mine:
                    self._watches.pop(job_id, None)
            watch.close()

    def before_watch(self) -> None:
        """A hook for subclasses: be ready to receive announcements before the first watch starts."""
