"""Pure decisions about a finished run: decode its output, name its failure reason, grade a test case."""

from __future__ import annotations

import base64
import signal as _signal
from dataclasses import dataclass

from chalicelib.sandbox.models import FailureReason, SandboxLimits, TestVerdict

# Messages runtimes print when an allocation fails under RLIMIT_AS (no cgroup to tell us precisely).
_OOM_MARKERS = (
    "MemoryError",
    "heap out of memory",
    "Cannot allocate memory",
    "std::bad_alloc",
    "Array buffer allocation failed",
)


@dataclass
class RawOutcome:
    """What the supervisor observed, before it is turned into a user-facing result."""

    exit_code: int | None
    signal: int | None
    wall_ms: int
    cpu_ms: int
    max_rss_kb: int
    killed_for: str | None  # set when we stopped it: wall_time | output_limit | cancelled
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    memory_hit: bool = False  # the memory cgroup hit its limit or killed a process


def decode(data: bytes) -> str:
    """UTF-8 with replacement characters: user output never makes us raise."""
    return data.decode("utf-8", errors="replace")


def raw_unless_utf8(data: bytes) -> str | None:
    """The bytes in base64 when they are not valid UTF-8 (their text lost some), else None (the text is exact)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii")
    return None


def normalise(text: str) -> str:
    """Drop whitespace at line ends and at the end of the text (the usual judge tolerance)."""
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def outputs_match(actual: str, expected: str) -> bool:
    """True when `actual` equals `expected` up to trailing whitespace on lines and at the end."""
    return normalise(actual) == normalise(expected)


def signal_name(number: int | None) -> str | None:
    """`9` -> `"SIGKILL"`; unknown numbers keep a readable name."""
    if number is None:
        return None
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def failure_reason(raw: RawOutcome, limits: SandboxLimits) -> FailureReason | None:
    """Why the run failed, most specific first; None when it exited 0 on its own."""
    if raw.killed_for is not None:
        return FailureReason(raw.killed_for)
    failed = raw.signal is not None or bool(raw.exit_code)
    # Without a memory cgroup (Lambda), a failed run whose peak RSS passed the limit ran out of memory.
    if failed and (raw.memory_hit or raw.max_rss_kb >= limits.memory_mb * 1024):
        return FailureReason.MEMORY_LIMIT
    if raw.signal is not None:
        cpu_exhausted = raw.cpu_ms >= limits.cpu_time_s * 1000 * 0.95
        if raw.signal == _signal.SIGXCPU or (raw.signal == _signal.SIGKILL and cpu_exhausted):
            return FailureReason.CPU_TIME
        return FailureReason.SIGNAL
    if raw.exit_code:
        tail = raw.stderr[-4096:].decode("utf-8", "replace")
        if any(marker in tail for marker in _OOM_MARKERS):
            return FailureReason.MEMORY_LIMIT
        return FailureReason.EXIT_CODE
    return None


def verdict(reason: FailureReason | None, stdout: str, expected: str) -> TestVerdict:
    """Grade one test case from its failure reason and output."""
    if reason in (FailureReason.WALL_TIME, FailureReason.CPU_TIME):
        return TestVerdict.TIME_LIMIT
    if reason is FailureReason.MEMORY_LIMIT:
        return TestVerdict.MEMORY_LIMIT
    if reason is not None:
        return TestVerdict.RUNTIME_ERROR
    return TestVerdict.ACCEPTED if outputs_match(stdout, expected) else TestVerdict.WRONG_ANSWER
