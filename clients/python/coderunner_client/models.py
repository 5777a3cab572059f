"""What the API answers, as typed, frozen dataclasses.

`from_api` takes the JSON the server sent, keeps the fields this client knows and ignores the others, so a
newer server that adds fields never breaks an older client; the whole answer stays in `raw`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled", "error"})


@dataclass(frozen=True)
class Model:
    """Base of every answer: known fields typed, the rest in `raw` (left out of `repr` and comparisons)."""

    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        hints = _hints(cls)
        known = {f.name: _convert(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data}
        known.pop("raw", None)
        return cls(**known, raw=data)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The class's field types, resolved once (the annotations are strings)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _convert(hint: Any, value: Any) -> Any:
    """`value` (plain JSON) as `hint` says: nested models, lists of models, ISO datetimes; the rest as is."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # `X | None`: convert as X
        return _convert(next(a for a in args if a is not type(None)), value)
    if origin is list and isinstance(value, list):
        return [_convert(args[0], v) for v in value]
    if isinstance(hint, type) and issubclass(hint, Model) and isinstance(value, dict):
        return hint.from_api(value)
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


@dataclass(frozen=True)
class TestCaseResult(Model):
    """The verdict of one test: accepted, wrong_answer, time_limit, memory_limit or runtime_error."""

    __test__ = False  # not a pytest class

    verdict: str
    exit_code: int | None = None
    reason: str | None = None
    stdout: str = ""
    stderr: str = ""
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0


@dataclass(frozen=True)
class TestSummary(Model):
    """Grading: how many tests were accepted, and each case."""

    __test__ = False

    total: int
    accepted: int
    cases: list[TestCaseResult] = field(default_factory=list)


@dataclass(frozen=True)
class Result(Model):
    """What the program did. `reason` says why it failed: exit_code, signal, memory_limit, output_limit, ..."""

    exit_code: int | None = None
    signal: str | None = None
    reason: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0
    tests: TestSummary | None = None


@dataclass(frozen=True)
class Job(Model):
    """A job: `queued` -> `running` -> succeeded | failed | timed_out | cancelled | error."""

    id: str
    status: str
    tier: str | None = None
    runtime: str | None = None
    tool: str | None = None
    position: int | None = None
    estimated_wait_s: float | None = None
    attempts: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_wait_ms: int | None = None
    sandbox: str | None = None
    error: str | None = None
    result: Result | None = None

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class JobPage(Model):
    """One page of `GET /v1/jobs`, newest first; pass `next_cursor` on for the next page."""

    jobs: list[Job]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Window(Model):
    """One quota window: its limit, what is used, what remains, and when it resets (Unix seconds)."""

    limit: int
    used: int
    remaining: int
    reset: int | None = None


@dataclass(frozen=True)
class Concurrency(Model):
    limit: int
    running: int


@dataclass(frozen=True)
class Usage(Model):
    """`GET /v1/usage`: the caller's limits and what is left of them."""

    key_id: str
    owner: str
    tier: str
    per_minute: Window
    per_day: Window
    concurrency: Concurrency | None = None
    max_wall_time_s: float | None = None
    max_memory_mb: int | None = None


@dataclass(frozen=True)
class TierQueue(Model):
    queued: int
    running: int
    capacity: int | None = None
    queue_cap: int | None = None
    estimated_wait_s: float | None = None


@dataclass(frozen=True)
class QueueStatus(Model):
    """`GET /v1/queue`: per tier, jobs queued and running, capacity and estimated wait."""

    tiers: dict[str, TierQueue]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Self:
        tiers = {name: TierQueue.from_api(tier) for name, tier in (data.get("tiers") or {}).items()}
        return cls(tiers=tiers, raw=data)


@dataclass(frozen=True)
class Runtime(Model):
    """A language (or, in `Runtimes.tools`, a registered tool) with its version and availability."""

    name: str
    version: str = ""
    available: bool = True
    default_limits: dict[str, Any] = field(default_factory=dict)
    entry_file: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Runtimes(Model):
    """`GET /v1/runtimes`."""

    runtimes: list[Runtime] = field(default_factory=list)
    tools: list[Runtime] = field(default_factory=list)


@dataclass(frozen=True)
class Event(Model):
    """One event of a device's offline inbox (`job.finished`: `data` holds the job)."""

    id: int | str
    type: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def job(self) -> Job | None:
        """The finished job the event carries, if it carries one."""
        job = self.data.get("job", self.data)
        return Job.from_api(job) if isinstance(job, dict) and "id" in job and "status" in job else None


@dataclass(frozen=True)
class EventBatch(Model):
    """`GET /v1/events`: the device's pending events in order, and how many were dropped (inbox full)."""

    events: list[Event] = field(default_factory=list)
    dropped: int = 0
