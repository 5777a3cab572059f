"""What every process the local stack starts does: go when the stack goes, even if it was SIGKILLed."""

from __future__ import annotations

import os
import signal
import threading


def exit_with_parent(check_every_s: float = 1.0) -> None:
    """SIGTERM this process once its parent is gone (it was re-parented), so no orphan keeps a port."""
    parent = os.getppid()

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(check_every_s):
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
