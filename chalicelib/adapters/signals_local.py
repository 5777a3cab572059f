"""Job change announcements between the local stack's processes (the API, the workers): Unix datagrams.

Every process that watches a job binds one datagram socket in `directory` (CODERUNNER_SIGNAL_DIR, which only
the local stack sets; in AWS the platform polls, see chalicelib/services/signals.py). An announcement is the
job id, sent to every other socket there and delivered to this process's own watchers: a worker that
finishes a job wakes the API's waiting `GET ?wait` at once, and the API that cancels a running job wakes the
watcher of the worker running it. Sends never block: a full or vanished receiver loses the announcement, and
its waiter's safety poll catches up. A socket whose process died (the chaos test kills workers) is removed
by the first sender that finds it refusing.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import uuid

from chalicelib.services.signals import InProcessSignals

log = logging.getLogger(__name__)

_SUFFIX = ".sock"
_MAX_ID = 256


class DatagramJobSignals(InProcessSignals):
    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.address = os.path.join(directory, f"{os.getpid()}-{uuid.uuid4().hex[:8]}{_SUFFIX}")
        self._inbox: socket.socket | None = None
        self._outbox: socket.socket | None = None
        self._bind_lock = threading.Lock()

    def job_changed(self, job_id: str) -> None:
        self.deliver(job_id)
        payload = job_id.encode()[:_MAX_ID]
        try:
            names = os.listdir(self.directory)
        except OSError:
            return  # the stack is shutting down
        outbox = self._sender()
        for name in names:
            path = os.path.join(self.directory, name)
            if not name.endswith(_SUFFIX) or path == self.address:
                continue
            try:
                outbox.sendto(payload, path)
            except ConnectionRefusedError:
                with contextlib.suppress(OSError):  # nobody listens there any more: a dead process's socket
                    os.unlink(path)
            except OSError:
                pass  # a full receiver (EAGAIN) or one gone meanwhile: its safety poll catches up

    def before_watch(self) -> None:
        if self._inbox is None:
            with self._bind_lock:
                if self._inbox is None:
                    self._inbox = self._bind()

    def close(self) -> None:
        """Stop receiving and remove this process's socket."""
        with contextlib.suppress(OSError):
            os.unlink(self.address)
        for sock in (self._inbox, self._outbox):
            if sock is not None:
                sock.close()

    def _bind(self) -> socket.socket:
        inbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        inbox.bind(self.address)
        atexit.register(self.close)
        threading.Thread(target=self._receive, args=(inbox,), name="job-signals", daemon=True).start()
        return inbox

    def _sender(self) -> socket.socket:
        if self._outbox is None:
            with self._bind_lock:
                if self._outbox is None:
                    outbox = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    outbox.setblocking(False)
                    self._outbox = outbox
        return self._outbox

    def _receive(self, inbox: socket.socket) -> None:
        while True:
            try:
                payload = inbox.recv(_MAX_ID)
            except OSError:
                return  # closed
            self.deliver(payload.decode(errors="replace"))
