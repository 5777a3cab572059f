"""A short `make fuzz`: a few dozen schemathesis requests against a stack of its own (valid and invalid data,
`?wait` capped), with the same rules: no 5xx, no undocumented 503, nothing that breaks the document."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tests.e2e.fuzz import fuzz

# Its own stack (not the session's): not in the "e2e" xdist group, so it can run beside that group on the other
# worker (tests/conftest.py schedules it early).
# pytest-timeout's 120 s is less than its own budgets: stack start (60 s) + schemathesis' own 240 s + stop (45 s).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]


def test_generated_requests_get_only_documented_answers(tmp_path: Path) -> None:
    args = argparse.Namespace(examples=2, seed=14, phases="examples,fuzzing", timeout=240)
    report, stack = fuzz(args, tmp_path)
    assert report.requests >= 20, report.details()
    assert report.ok, f"{report.line()}\n{report.details()}\n{stack.tail()}"
    assert report.server_errors == [] and report.undocumented_503 == [] and report.violations == []
    assert report.line().endswith("undocumented_503=0 schema_violations=0 schemathesis=ok"), report.line()
