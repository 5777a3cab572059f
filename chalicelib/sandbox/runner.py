"""The runner core: resolve a request to a command, run it once or once per test case, build the result.

Shared by all three sandboxes; only the `Isolation` differs (full local layers, or Lambda's subset).
With test cases, the top-level fields describe the first failing case, or the last case when all pass,
so a failed submission shows the run that failed it.
"""

from __future__ import annotations

import posixpath
import threading

from chalicelib.sandbox import runtimes
from chalicelib.sandbox.grading import RawOutcome, decode, failure_reason, raw_unless_utf8, signal_name, verdict
from chalicelib.sandbox.local import Isolation, PreparedJob, default_isolation
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    FailureReason,
    SandboxLimits,
    SourceFile,
    TestResult,
    TestSummary,
    TestVerdict,
    first_failure,
)
from chalicelib.sandbox.runtimes import UnknownRuntime

MAX_TEST_CASES = 20


class InvalidRequest(UnknownRuntime):
    """The request cannot be run as given (bad file path, too many test cases...)."""


def _checked_files(files: list[SourceFile]) -> list[SourceFile]:
    for source in files:
        normal = posixpath.normpath(source.path)
        if not source.path or posixpath.isabs(normal) or normal.split("/")[0] in ("..", ".") or "\0" in normal:
            raise InvalidRequest(f"file path {source.path!r} must be relative and stay in the work dir")
    return files


def prepare(request: ExecutionRequest) -> PreparedJob:
    """Resolve runtime/tool and files to what the isolation layer starts."""
    files = _checked_files(request.files)
    if request.runtime is not None and not files:
        raise InvalidRequest("a runtime job needs at least one file (its entry point)")
    if len(request.tests) > MAX_TEST_CASES:
        raise InvalidRequest(f"at most {MAX_TEST_CASES} test cases")
    entry = posixpath.normpath(files[0].path) if request.runtime is not None else None
    command = runtimes.resolve(request.runtime, request.tool, entry, request.args, request.limits.memory_mb)
    return PreparedJob(
        job_id=request.job_id,
        argv=command.argv,
        files=files,
        stdin=request.stdin.encode(),
        limits=request.limits,
        address_space_extra_mb=command.address_space_extra_mb,
    )


def _result(raw: RawOutcome, limits: SandboxLimits) -> ExecutionResult:
    return ExecutionResult(
        exit_code=raw.exit_code,
        signal=signal_name(raw.signal),
        reason=failure_reason(raw, limits),
        stdout=decode(raw.stdout),
        stderr=decode(raw.stderr),
        stdout_raw=raw_unless_utf8(raw.stdout),
        stderr_raw=raw_unless_utf8(raw.stderr),
        stdout_truncated=raw.stdout_truncated,
        stderr_truncated=raw.stderr_truncated,
        wall_ms=raw.wall_ms,
        cpu_ms=raw.cpu_ms,
        max_rss_kb=raw.max_rss_kb,
    )


def execute(
    request: ExecutionRequest,
    *,
    cancel: threading.Event | None = None,
    isolation: Isolation | None = None,
) -> ExecutionResult:
    """Run the request and describe what it did; user failures are results, platform faults raise
    `SandboxUnavailable`, an unknown runtime/tool or bad request raises `UnknownRuntime` (a ValueError)."""
    job = prepare(request)
    iso = isolation or default_isolation()
    if not request.tests:
        return _result(iso.run(job, job.stdin, cancel), request.limits)
    cases: list[TestResult] = []
    shown: ExecutionResult | None = None
    for case in request.tests:
        result = _result(iso.run(job, case.stdin.encode(), cancel), request.limits)
        graded = verdict(result.reason, result.stdout, case.expected_stdout)
        cases.append(_case(result, graded))
        if shown is None and graded is not TestVerdict.ACCEPTED:
            shown = result
        if result.reason is FailureReason.CANCELLED:
            break
    top = shown or result
    accepted = sum(1 for case in cases if case.verdict is TestVerdict.ACCEPTED)
    # A wrong answer is the one failing verdict the run itself has no reason for (it exited 0): say it, so a
    # failed job always has a reason.
    graded_as = first_failure(cases)
    reason = FailureReason.WRONG_ANSWER if graded_as is TestVerdict.WRONG_ANSWER else top.reason
    summary = TestSummary(total=len(request.tests), accepted=accepted, cases=cases)
    return top.model_copy(update={"tests": summary, "verdict": graded_as, "reason": reason})


def _case(result: ExecutionResult, graded: TestVerdict) -> TestResult:
    return TestResult(
        verdict=graded,
        exit_code=result.exit_code,
        reason=result.reason,
        stdout=result.stdout,
        stderr=result.stderr,
        stdout_raw=result.stdout_raw,
        stderr_raw=result.stderr_raw,
        wall_ms=result.wall_ms,
        cpu_ms=result.cpu_ms,
        max_rss_kb=result.max_rss_kb,
    )
