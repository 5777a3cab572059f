"""The per-IP guard in front of every route, before authentication (brute force on keys).

It counts per process: exact in the local stack, per warm container in Lambda, where the API stage's
throttling and the WAF rate rule in `infra/` guard the whole fleet.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time

from chalicelib.domain.errors import QuotaExceeded

FAILED_AUTH_COST = 2  # a request that fails authentication counts double


class IpGuard:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, int]] = {}

    def _now(self) -> float:
        return time.time()

    def charge(self, ip: str, cost: int = 1) -> None:
        """Count `cost` requests for `ip`; QuotaExceeded (429, code ip_rate_limited) beyond the limit."""
        now = self._now()
        window = int(now // 60)
        with self._lock:
            if len(self._windows) > 100_000:  # old windows are dropped so memory stays bounded
                self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
            seen_window, used = self._windows.get(ip, (window, 0))
            used = used if seen_window == window else 0
            if used + cost > self.per_minute:
                self._windows[ip] = (window, used)
                retry = max(1, math.ceil((window + 1) * 60 - now))
                raise QuotaExceeded(
                    "per_ip", self.per_minute, retry, f"too many requests from this address; retry after {retry} s"
                )
            self._windows[ip] = (window, used + cost)

    def failed_auth(self, ip: str) -> None:
        """Charge the extra cost of a failed authentication (never raises: the 401 is the answer)."""
        with contextlib.suppress(QuotaExceeded):
            self.charge(ip, FAILED_AUTH_COST - 1)
