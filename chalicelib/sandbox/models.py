"""What a sandbox is asked to run and what it answers: plain, JSON-serialisable models.

These are the contract between the worker and every sandbox (local, Lambda, Fargate): the worker builds an
`ExecutionRequest` from a job, a sandbox returns an `ExecutionResult`. Nothing here does I/O.
"""

from __future__ import annotations

import base64
from enum import StrEnum

from pydantic import BaseModel, Field

from chalicelib.domain.errors import PlatformFault


class FailureReason(StrEnum):
    """Why a run did not succeed; `None` on the result means it exited 0."""

    EXIT_CODE = "exit_code"
    SIGNAL = "signal"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    CPU_TIME = "cpu_time"
    WALL_TIME = "wall_time"
    CANCELLED = "cancelled"
    WRONG_ANSWER = "wrong_answer"  # graded: the program ran cleanly but a test's output did not match


class TestVerdict(StrEnum):
    """The grade of one test case."""

    __test__ = False  # not a pytest class

    ACCEPTED = "accepted"
    WRONG_ANSWER = "wrong_answer"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    RUNTIME_ERROR = "runtime_error"


class SandboxLimits(BaseModel):
    """Hard limits applied to one run (already defaulted from the runtime and capped by the tier)."""

    wall_time_s: float = Field(gt=0)
    cpu_time_s: float = Field(gt=0)
    memory_mb: int = Field(gt=0)
    output_kb: int = Field(gt=0)
    processes: int = Field(gt=0)


# What a runtime or tool gets when neither it nor the job says otherwise (then capped by the tier).
DEFAULT_LIMITS = SandboxLimits(wall_time_s=5, cpu_time_s=5, memory_mb=256, output_kb=64, processes=32)


class SourceFile(BaseModel):
    """A file written into the job's fresh work dir before the run; `path` is relative to it."""

    path: str
    content: str


class TestCase(BaseModel):
    """One grading case: the program runs once with `stdin` and its stdout is compared."""

    __test__ = False

    stdin: str = ""
    expected_stdout: str


class ExecutionRequest(BaseModel):
    """Everything a sandbox needs to run one job, passed by value (Lambda) or by reference (Fargate)."""

    job_id: str
    runtime: str | None = None  # a runtime name from the registry, or
    tool: str | None = None  # a registered tool name
    files: list[SourceFile] = Field(default_factory=list)  # for a runtime: the first file is the entry point
    args: list[str] = Field(default_factory=list)
    stdin: str = ""
    tests: list[TestCase] = Field(default_factory=list)
    limits: SandboxLimits


class TestResult(BaseModel):
    """The verdict of one test case, with what the program did (`stdout_raw`: as on ExecutionResult)."""

    __test__ = False

    verdict: TestVerdict
    exit_code: int | None = None
    reason: FailureReason | None = None
    stdout: str = ""  # the first CASE_OUTPUT_CHARS of it (the failing case's whole output is the result's own)
    stderr: str = ""
    stdout_raw: str | None = None
    stderr_raw: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0


class TestSummary(BaseModel):
    """Counts per verdict over all test cases."""

    __test__ = False

    total: int
    accepted: int
    cases: list[TestResult]


def first_failure(cases: list[TestResult]) -> TestVerdict:
    """The verdict of a graded run: its first failing case's, or accepted."""
    return next((case.verdict for case in cases if case.verdict is not TestVerdict.ACCEPTED), TestVerdict.ACCEPTED)


class ExecutionResult(BaseModel):
    """What the run did. A user-code failure is a result (never an exception).

    `stdout`/`stderr` are the output as UTF-8 text, invalid bytes replaced by U+FFFD. When the bytes were not
    valid UTF-8, `stdout_raw`/`stderr_raw` carry them exactly, in base64 (None otherwise: the text's UTF-8
    encoding is then the bytes), so `output_encoding: base64` can return what the program wrote. A result
    stored before these fields existed reads as None: its text is all that is left.
    """

    exit_code: int | None = None
    signal: str | None = None  # e.g. "SIGKILL"
    reason: FailureReason | None = None  # None when the program exited 0 (graded: wrong_answer, see verdict)
    stdout: str = ""
    stderr: str = ""
    stdout_raw: str | None = None
    stderr_raw: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_ms: int = 0
    cpu_ms: int = 0
    max_rss_kb: int = 0
    tests: TestSummary | None = None
    verdict: TestVerdict | None = None  # graded: the first failing case's verdict, or accepted; None without tests
    sandbox: str = "local"  # which sandbox ran it: local | lambda | fargate

    def output_bytes(self, stream: str) -> bytes:
        """What the program wrote on `stream` ("stdout" or "stderr"), byte for byte when the sandbox kept it."""
        return raw_bytes(getattr(self, stream), getattr(self, f"{stream}_raw"))


def raw_bytes(text: str, raw: str | None) -> bytes:
    """The bytes behind an output: `raw` (base64) when set, else the text's UTF-8 encoding."""
    return base64.b64decode(raw) if raw is not None else text.encode()


class SandboxUnavailable(PlatformFault):
    """The platform could not run the job (throttled, no capacity, crashed).

    Retryable, never the user's fault.
    """


class SandboxRefused(SandboxUnavailable):
    """The sandbox will not run user code here because one of its guarantees cannot hold (no layer cuts the
    network, the handler cannot make itself non-dumpable, ...). `reason` says which, for the job's error.

    Nothing ran. Another sandbox may still run the job (`auto` moves on); the refusing one will not.
    """

    def __init__(self, sandbox: str, reason: str) -> None:
        super().__init__(f"the {sandbox} sandbox refuses to run user code: {reason}")
        self.sandbox = sandbox
        self.reason = reason


class ResultRejected(SandboxUnavailable):
    """A sandbox answer without a valid MAC: forged (by the user's program, through a hole) or corrupted.

    Never accepted as the job's result, counted (`SandboxResultRejected`) and never retried: re-running a
    program that forged a result only gives it another try.
    """


class SandboxOffer(BaseModel):
    """What one sandbox offers here: its runtimes and tools (name -> version), its layers, and whether it
    runs user code at all (`refusal` says why not)."""

    sandbox: str
    reachable: bool = True  # False: it could not be asked (then `refusal` says what failed)
    refusal: str | None = None
    runtimes: dict[str, str] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    layers: dict[str, bool | str] = Field(default_factory=dict)
    source: str = ""  # how this was learnt ("probed on this host", "probed in the function", ...)

    @property
    def usable(self) -> bool:
        return self.reachable and self.refusal is None

    def offers(self, runtime: str | None, tool: str | None) -> bool:
        """True when this sandbox has the runtime (or the tool)."""
        return (runtime in self.runtimes) if runtime is not None else (tool in self.tools)
