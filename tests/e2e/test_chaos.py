"""A small `make chaos`: 30 jobs across tiers while 3 worker processes are SIGKILLed (mid-run included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.chaos import run_chaos

# Its own stack (not the session's): not in the "e2e" xdist group, so it can run beside that group on the other
# worker (tests/conftest.py schedules it early).
# pytest-timeout's 120 s is less than its own budgets: stack start (60 s), the load, the 90 s wait for terminal
# states, stop (45 s).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def test_killed_workers_lose_nothing_run_nothing_twice_and_leak_nothing(tmp_path: Path) -> None:
    report, stack = run_chaos(n_jobs=30, kills=3, seed=7, timeout_s=90, workdir=tmp_path)
    assert len(report.kills) == 3, report.details()
    assert report.line() == "chaos: jobs=30 terminal=30 duplicate_runs=0 leaked_slots=0 lost=0", (
        f"{report.details()}\n{stack.tail()}"
    )
    # Every chaos job is written to succeed: one that did not was hurt by a kill (see
    # test_killed_worker_sandbox.py for the slot-sharing bug this once caught).
    assert report.failures() == {}, report.details()
    assert sum(report.attempts[n] for n in report.attempts if n > 1) >= 1, "no kill hit a running job"
