"""The one status line `coderunner run` shows while it waits: live on a terminal, plain lines otherwise."""

from __future__ import annotations

import signal
from typing import Protocol, TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from coderunner_client.models import Job, TestCaseResult


class StatusLine(Protocol):
    def show(self, text: str) -> None:
        """Where the job is now (the line changes in place, or a new plain line when it changed)."""

    def finish(self, text: str) -> None:
        """The verdict: the line's last state, which stays."""

    def close(self) -> None:
        """Leave the terminal as it was (after an error or Ctrl-C too); harmless when already finished."""


class SilentStatus:
    """No status line (`--json`: stdout is for the job, stderr stays quiet)."""

    def show(self, text: str) -> None:
        pass

    def finish(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainStatus:
    """One line per change (logs, pipes, CI): never a control character."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.last = stream, ""

    def show(self, text: str) -> None:
        if text != self.last:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last = text

    def finish(self, text: str) -> None:
        self.show(text)

    def close(self) -> None:
        pass


class LiveStatus:
    """One line redrawn in place with a spinner (rich's live display); the verdict stays when it is done."""

    def __init__(self, console: Console) -> None:
        self.live = Live(console=console, refresh_per_second=8, transient=False)
        self.started = False

    def show(self, text: str) -> None:
        self.live.update(Spinner("dots", text=text))
        if not self.started:
            self.live.start()
            self.started = True

    def finish(self, text: str) -> None:
        self.live.update(Text(text))
        if self.started:
            self.close()
        else:
            self.live.console.print(text)

    def close(self) -> None:
        if self.started:
            self.live.stop()
            self.started = False


def status_line(stream: TextIO) -> StatusLine:
    console = Console(file=stream)
    return LiveStatus(console) if console.is_terminal else PlainStatus(stream)


def describe(job: Job) -> str:
    """What the job is doing now, or how it ended, in a few words."""
    if job.status == "queued":
        return f"queued at position {job.position or 0}, about {job.estimated_wait_s or 0:.0f} s"
    if job.status == "running":
        return "running"
    return verdict(job)


def verdict(job: Job) -> str:
    result = job.result
    if job.status == "error" or result is None:
        return f"{job.status}: {job.error}" if job.error else job.status
    took = f" in {result.wall_ms / 1000:.2f} s"
    tests = result.tests
    graded = f", {tests.accepted}/{tests.total} tests accepted" if tests else ""
    if job.status == "succeeded":
        return f"succeeded{took}{graded}"
    failing = first_failing_test(job)
    if failing is not None:
        why = f"test {failing[0]}: {failing[1].verdict}"
    elif result.signal:
        why = f"killed by {result.signal}"
    elif result.reason in (None, "exit_code"):
        why = f"exit code {result.exit_code}"
    else:
        why = result.reason
    return f"{job.status} ({why}){took}{graded}"


def first_failing_test(job: Job) -> tuple[int, TestCaseResult] | None:
    """The first test case not accepted, numbered from 1."""
    tests = job.result.tests if job.result else None
    cases = tests.cases if tests else []
    return next(((i, case) for i, case in enumerate(cases, 1) if case.verdict != "accepted"), None)


def signal_number(name: str) -> int | None:
    """`SIGSEGV` -> 11, `SIG42` -> 42; None for a name this host does not know."""
    try:
        return int(signal.Signals[name])
    except KeyError:
        return int(name[3:]) if name.startswith("SIG") and name[3:].isdigit() else None
