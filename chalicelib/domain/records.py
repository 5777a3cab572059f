"""What one job record can hold. A job is one DynamoDB item, at most 400 KB: its code and inputs are capped at
submit (Settings.max_job_bytes), and its result is trimmed here to its share before it is stored, so no
program's output can make the store refuse the write (it would fail the job's every attempt)."""

from __future__ import annotations

from chalicelib.sandbox.models import ExecutionResult

MAX_RESULT_BYTES = 160 * 1024  # + max_job_bytes (<= 200 KiB) + ids, times and names: inside 400 KB
_MARGIN = 8 * 1024  # the result's other fields and JSON punctuation (20 test cases take about 3 KB)


def stored_size(result: ExecutionResult) -> int:
    """Bytes the result takes as stored (its JSON, UTF-8)."""
    return len(result.model_dump_json().encode())


def fit_result(result: ExecutionResult, max_bytes: int = MAX_RESULT_BYTES) -> ExecutionResult:
    """The result, with its longest outputs (stdout, stderr, each test's) cut to a common length until it fits
    in `max_bytes`; a cut stdout or stderr is flagged truncated. A result that fits is returned as is."""
    texts = [result.stdout, result.stderr]
    for case in result.tests.cases if result.tests is not None else []:
        texts += [case.stdout, case.stderr]
    if sum(map(len, texts)) <= max_bytes and stored_size(result) <= max_bytes:  # short: cheap to measure
        return result
    level = _level(sorted(map(len, texts)), max_bytes - _MARGIN)
    while True:
        trimmed = _cut(result, level)
        if level == 0 or stored_size(trimmed) <= max_bytes:
            return trimmed
        level //= 2  # escapes (\u0001 takes 6 bytes) and wide characters make a character more than a byte


def _level(lengths: list[int], budget: int) -> int:
    """The length L that cuts every text longer than L so that the lengths sum to at most `budget` (sorted)."""
    for i, length in enumerate(lengths):
        if length * (len(lengths) - i) > budget:
            return budget // (len(lengths) - i)
        budget -= length
    return lengths[-1] if lengths else 0


def _cut(result: ExecutionResult, share: int) -> ExecutionResult:
    changes: dict[str, object] = {
        "stdout": result.stdout[:share],
        "stderr": result.stderr[:share],
        "stdout_truncated": result.stdout_truncated or len(result.stdout) > share,
        "stderr_truncated": result.stderr_truncated or len(result.stderr) > share,
    }
    if result.tests is not None:
        cut = [{"stdout": c.stdout[:share], "stderr": c.stderr[:share]} for c in result.tests.cases]
        cases = [c.model_copy(update=u) for c, u in zip(result.tests.cases, cut, strict=True)]
        changes["tests"] = result.tests.model_copy(update={"cases": cases})
    return result.model_copy(update=changes)
