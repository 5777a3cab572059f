"""Quota windows: per-minute and per-day (UTC) counters and what to tell the caller. Pure arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chalicelib.config import TierPolicy
from chalicelib.domain.errors import QuotaExceeded, QuotaUsage


def minute_window(now: float) -> int:
    """The index of the minute `now` falls in."""
    return int(now // 60)


def day_window(now: float) -> str:
    """The UTC day `now` falls in, as YYYY-MM-DD."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def minute_reset(now: float) -> int:
    """Epoch second at which the current minute window ends."""
    return (minute_window(now) + 1) * 60


def day_reset(now: float) -> int:
    """Epoch second of the next UTC midnight."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((today + timedelta(days=1)).timestamp())


@dataclass(frozen=True)
class QuotaState:
    """A key's counters as stored: the window each belongs to and how many were used in it."""

    m_win: int = -1
    m_n: int = 0
    d_win: str = ""
    d_n: int = 0

    def current(self, now: float) -> QuotaState:
        """The same counters seen at `now`: a window that has passed counts as zero."""
        mw, dw = minute_window(now), day_window(now)
        return QuotaState(mw, self.m_n if self.m_win == mw else 0, dw, self.d_n if self.d_win == dw else 0)


def charged(stored: QuotaState, now: float, policy: TierPolicy) -> QuotaState:
    """The counters after admitting one more request at `now`; QuotaExceeded names the quota that refuses it
    (the day's first: waiting for the minute would not help)."""
    cur = stored.current(now)
    if cur.d_n >= policy.per_day:
        raise refusal("per_day", cur, now, policy)
    if cur.m_n >= policy.per_minute:
        raise refusal("per_minute", cur, now, policy)
    return QuotaState(cur.m_win, cur.m_n + 1, cur.d_win, cur.d_n + 1)


def refusal(quota: str, state: QuotaState, now: float, policy: TierPolicy) -> QuotaExceeded:
    """The error for a refused request: which quota, its limit, when it resets, and the key's usage."""
    daily = quota == "per_day"
    limit = policy.per_day if daily else policy.per_minute
    retry = max(1, math.ceil((day_reset(now) if daily else minute_reset(now)) - now))
    which = "per-day quota" if daily else "per-minute rate limit"
    return QuotaExceeded(
        "per_day" if daily else "per_minute",
        limit,
        retry,
        f"the {which} of the '{policy.name}' tier ({limit}) is used up; retry after {retry} s",
        usage(state, now, policy),
        tier=policy.name,
    )


def refunded(stored: QuotaState, charged_minute: int | None, charged_day: str | None) -> QuotaState:
    """The counters after giving back one charge made in the given windows (never below zero)."""
    m_n = stored.m_n - 1 if stored.m_win == charged_minute and stored.m_n > 0 else stored.m_n
    d_n = stored.d_n - 1 if stored.d_win == charged_day and stored.d_n > 0 else stored.d_n
    return QuotaState(stored.m_win, m_n, stored.d_win, d_n)


def usage(state: QuotaState, now: float, policy: TierPolicy) -> QuotaUsage:
    """Limits, what remains of them at `now`, and when each window resets."""
    cur = state.current(now)
    return QuotaUsage(
        minute_limit=policy.per_minute,
        minute_remaining=max(0, policy.per_minute - cur.m_n),
        minute_reset=minute_reset(now),
        day_limit=policy.per_day,
        day_remaining=max(0, policy.per_day - cur.d_n),
        day_reset=day_reset(now),
    )
