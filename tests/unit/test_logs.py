"""Logs of a job's life: one structured line per transition (id, key, tier, status, durations), and the local
processes' format keeps those fields and quiets the libraries."""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.domain.exits import Finished
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services.lifecycle import end_job
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import start
from devtools import logs

JOB = {"runtime": "python", "source": "print(1)"}


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_each_transition_is_one_line_with_the_job_its_key_tier_and_durations(deps: Any, key: str) -> None:
    # On the lifecycle's logger itself: importing app.py (another test may have) stops propagation to the root.
    lifecycle_log = logging.getLogger("chalicelib.services.lifecycle")
    previous = lifecycle_log.level
    lifecycle_log.setLevel(logging.INFO)  # setLevel: it also forgets what the logger cached from earlier tests
    collected = Collected()
    lifecycle_log.addHandler(collected)
    try:
        job = submit_job(deps, key, JOB).job
        deps.clock.advance(1.5)
        running = start(deps, deps.jobs.get(job.id))
        assert running is not None
        end_job(deps, running, Finished(ExecutionResult(exit_code=0, wall_ms=42)))
    finally:
        lifecycle_log.removeHandler(collected)
        lifecycle_log.setLevel(previous)
    lines = [r for r in collected.records if hasattr(r, "status")]
    assert [r.getMessage() for r in lines] == ["job queued", "job running", "job succeeded"]
    for record in lines:
        assert (record.job_id, record.key_id, record.tier) == (job.id, job.key_id, "free")  # type: ignore[attr-defined]
    queued, started, done = (vars(r) for r in lines)
    assert queued["position"] == 0 and queued["queue_wait_ms"] is None
    assert started["queue_wait_ms"] == 1500 and started["attempt"] == 1 and started["sandbox"] == "local"
    assert done["queue_wait_ms"] == 1500 and done["run_ms"] is not None and done["exit"] == "Finished"


def test_local_lines_keep_the_extras() -> None:
    record = logging.makeLogRecord({"name": "x", "msg": "job %s", "args": ("queued",), "levelname": "INFO"})
    record.job_id, record.tier, record.note, record.gone = "01abc", "free", "two words", None
    line = logs.ExtrasFormatter("worker").format(record)
    assert line.endswith("worker INFO x: job queued job_id=01abc note='two words' tier=free")


def test_importing_the_app_leaves_no_json_handler_nor_chatty_library_after_the_take_back() -> None:
    import app

    app.logger.append_keys()  # builds Powertools' Logger, which copies its handler to every registered logger
    assert logs.take_back_from_powertools() > 0
    logs.take_back_from_powertools()
    for logger in logging.root.manager.loggerDict.values():
        if isinstance(logger, logging.Logger):
            assert not any(type(h.formatter).__name__ == "LambdaPowertoolsFormatter" for h in logger.handlers)
    assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO)
    assert logging.getLogger("chalicelib.services.lifecycle").propagate  # to the local handler
