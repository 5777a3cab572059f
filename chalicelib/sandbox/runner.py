"""The runner core: resolve a request to a command, run it once or once per test case, build the result.

Shared by all three sandboxes; only the `Isolation` differs (full local layers, or Lambda's subset).
With test cases, the top-level fields describe the first failing case, or the last case when all pass,
so a failed submission shows the run that failed it; each case keeps the first CASE_OUTPUT_CHARS of its
output. A result always fits one sandbox response (MAX_RESULT_JSON_BYTES, under a Lambda response's 6 MB):
output that only JSON's escaping would push past it is cut, with its `_truncated` flag set.
"""

from __future__ import annotations

import base64
import json
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
    raw_bytes,
)
from chalicelib.sandbox.runtimes import UnknownRuntime

MAX_TEST_CASES = 20
CASE_OUTPUT_CHARS = 4096
MAX_RESULT_JSON_BYTES = 5 * 1024 * 1024


class InvalidRequest(UnknownRuntime):
    """The request cannot be run as given (bad file path, too many test cases...)."""


def _checked_files(files: list[SourceFile]) -> list[SourceFile]:
    paths = {posixpath.normpath(source.path) for source in files}
    for source in files:
        normal = posixpath.normpath(source.path)
        if not source.path or posixpath.isabs(normal) or normal.split("/")[0] in ("..", ".") or "\0" in normal:
            raise InvalidRequest(f"file path {source.path!r} must be relative and stay in the work dir")
        parent = posixpath.dirname(normal)
        while parent:
            if parent in paths:
                raise InvalidRequest(f"{parent!r} cannot be both a file and the directory of {source.path!r}")
            parent = posixpath.dirname(parent)
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
        return fit(_result(iso.run(job, job.stdin, cancel), request.limits))
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
    return fit(top.model_copy(update={"tests": summary, "verdict": graded_as, "reason": reason}))


def fit(result: ExecutionResult, limit: int = MAX_RESULT_JSON_BYTES) -> ExecutionResult:
    """The result cut to `limit` bytes of JSON (ASCII-escaped: the largest a runtime may send it), by halving
    the longer output while it is over."""
    while len(json.dumps(result.model_dump(mode="json"))) > limit:
        name = "stdout" if len(result.stdout) >= len(result.stderr) else "stderr"
        text = getattr(result, name)
        if not text:
            break
        raw = getattr(result, f"{name}_raw")
        halved = _cut(text, raw, len(text) // 2)
        result = result.model_copy(update={name: halved[0], f"{name}_raw": halved[1], f"{name}_truncated": True})
    return result


def _cut(text: str, raw: str | None, chars: int) -> tuple[str, str | None]:
    """The first `chars` characters of an output, and its exact bytes (base64) cut to match when kept."""
    if len(text) <= chars:
        return text, raw
    kept = text[:chars]
    if raw is None:
        return kept, None
    exact = raw_bytes(text, raw)[: len(kept.encode())]
    return kept, base64.b64encode(exact).decode()


def _case(result: ExecutionResult, graded: TestVerdict) -> TestResult:
    stdout, stdout_raw = _cut(result.stdout, result.stdout_raw, CASE_OUTPUT_CHARS)
    stderr, stderr_raw = _cut(result.stderr, result.stderr_raw, CASE_OUTPUT_CHARS)
    return TestResult(
        verdict=graded,
        exit_code=result.exit_code,
        reason=result.reason,
        stdout=stdout,
        stderr=stderr,
        stdout_raw=stdout_raw,
        stderr_raw=stderr_raw,
        stdout_truncated=result.stdout_truncated or len(result.stdout) > CASE_OUTPUT_CHARS,
        stderr_truncated=result.stderr_truncated or len(result.stderr) > CASE_OUTPUT_CHARS,
        wall_ms=result.wall_ms,
        cpu_ms=result.cpu_ms,
        max_rss_kb=result.max_rss_kb,
    )
