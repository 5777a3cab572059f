"""Quota windows: per-minute and per-day (UTC) counters and what to tell the caller. Pure arithmetic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from chalicelib.config import TierPolicy


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


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    state: QuotaState  # the state to store if allowed, else the current (unchanged) state
    code: str | None = None  # "rate_limited" | "daily_quota_exceeded" when refused
    retry_after: int = 0


def decide(stored: QuotaState, now: float, policy: TierPolicy) -> QuotaDecision:
    """Admit one more request at `now`, or say which quota refuses it and for how long."""
    cur = stored.current(now)
    if cur.d_n >= policy.per_day:
        return QuotaDecision(False, cur, "daily_quota_exceeded", max(1, math.ceil(day_reset(now) - now)))
    if cur.m_n >= policy.per_minute:
        return QuotaDecision(False, cur, "rate_limited", max(1, math.ceil(minute_reset(now) - now)))
    return QuotaDecision(True, QuotaState(cur.m_win, cur.m_n + 1, cur.d_win, cur.d_n + 1))


def refunded(stored: QuotaState, charged_minute: int | None, charged_day: str | None) -> QuotaState:
    """The counters after giving back one charge made in the given windows (never below zero)."""
    m_n = stored.m_n - 1 if stored.m_win == charged_minute and stored.m_n > 0 else stored.m_n
    d_n = stored.d_n - 1 if stored.d_win == charged_day and stored.d_n > 0 else stored.d_n
    return QuotaState(stored.m_win, m_n, stored.d_win, d_n)


def rate_headers(state: QuotaState, now: float, policy: TierPolicy) -> dict[str, str]:
    """X-RateLimit-* (the per-minute window) and X-DailyQuota-* headers for a submit response."""
    cur = state.current(now)
    return {
        "X-RateLimit-Limit": str(policy.per_minute),
        "X-RateLimit-Remaining": str(max(0, policy.per_minute - cur.m_n)),
        "X-RateLimit-Reset": str(minute_reset(now)),
        "X-DailyQuota-Limit": str(policy.per_day),
        "X-DailyQuota-Remaining": str(max(0, policy.per_day - cur.d_n)),
        "X-DailyQuota-Reset": str(day_reset(now)),
    }
