"""Job change announcements: which state changes announce, a waiting GET woken by one, and a cancel that
reaches a running job through one instead of a poll. On fakes (the datagram adapter: tests/integration)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chalicelib.domain.jobs import JobStatus
from chalicelib.sandbox.models import ExecutionResult
from chalicelib.services import lifecycle, queries, worker
from chalicelib.services.keys import authenticate
from chalicelib.services.reaper import dead_letter
from chalicelib.services.signals import ChangeWatch, PolledJobSignals
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import handle_message
from tests.fakes import FakeSandbox
from tests.waiting import wait_for

JOB = {"runtime": "python", "source": "print(1)"}


def submit(deps: Any, key: str) -> str:
    return submit_job(deps, key, JOB).job.id


def test_a_run_announces_its_start_and_its_end(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    assert deps.signals.changed == []  # a submit tells nobody: nobody waits on a job that did not exist
    handle_message(deps, {"job_id": job_id, "tier": "free"})
    assert deps.signals.changed == [job_id, job_id]


def test_a_cancel_and_an_error_are_announced(deps: Any, key: str) -> None:
    cancelled, errored = submit(deps, key), submit(deps, key)
    lifecycle.cancel(deps, authenticate(deps, key), cancelled)
    dead_letter(deps, {"job_id": errored, "reason": "gave up"})
    assert deps.signals.changed == [cancelled, errored]


def test_a_waiting_get_is_woken_by_the_announcement_of_the_end(deps: Any, key: str) -> None:
    job_id = submit(deps, key)
    caller = authenticate(deps, key)
    reads = []
    original_get = deps.jobs.get
    deps.jobs.get = lambda jid, consistent=True: reads.append(jid) or original_get(jid, consistent)
    woken: list[bool] = []
    original_watch = deps.signals.watch

    def recording_watch(jid: str) -> Any:
        manager = original_watch(jid)
        if threading.current_thread().name != "getter":  # the worker's watcher of the run watches too
            return manager

        class Recorded:
            def __enter__(self) -> Any:
                wait = manager.__enter__()
                return lambda timeout_s: woken.append(wait(timeout_s)) or woken[-1]

            def __exit__(self, *exc: Any) -> Any:
                return manager.__exit__(*exc)

        return Recorded()

    deps.signals.watch = recording_watch
    answer: list[Any] = []
    getter = threading.Thread(target=lambda: answer.append(queries.get_job(deps, caller, job_id, 20)), name="getter")
    getter.start()
    wait_for(lambda: deps.signals.watching(job_id) and reads, "the GET to wait", 10, 0.005)
    handle_message(deps, {"job_id": job_id, "tier": "free"})
    getter.join(30)
    assert answer and answer[0].status == "succeeded"
    assert woken and all(woken), woken  # every wake-up was an announcement, none a timed-out poll


def test_a_cancel_reaches_a_running_job_through_its_announcement(deps: Any, key: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(worker, "CANCEL_SAFETY_POLL_S", 3600.0)  # no safety poll could stop it in this test
    job_id = submit(deps, key)
    caller = authenticate(deps, key)
    running = threading.Event()
    stopped: list[bool] = []

    class UntilCancelled(FakeSandbox):
        def run(self, request: Any, cancel: Any = None) -> ExecutionResult:
            running.set()
            stopped.append(cancel.wait(30))
            return ExecutionResult(exit_code=None, reason="cancelled", wall_ms=5)

    deps.sandboxes["local"] = UntilCancelled()
    outcome: list[str] = []
    run = threading.Thread(target=lambda: outcome.append(handle_message(deps, {"job_id": job_id, "tier": "free"})))
    run.start()
    assert running.wait(30)
    wait_for(lambda: deps.signals.watching(job_id), "the watcher", 10, 0.005)
    lifecycle.cancel(deps, caller, job_id)
    run.join(30)
    assert stopped == [True] and outcome == ["discarded"]
    assert deps.jobs.get(job_id).status is JobStatus.CANCELLED


def test_the_watcher_of_a_finished_run_is_gone_at_once(deps: Any, key: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(worker, "CANCEL_SAFETY_POLL_S", 3600.0)
    before = {t for t in threading.enumerate() if t.name.startswith("watch-")}
    job_id = submit(deps, key)
    handle_message(deps, {"job_id": job_id, "tier": "free"})
    assert {t for t in threading.enumerate() if t.name.startswith("watch-")} == before


@pytest.mark.parametrize("signals", [PolledJobSignals()])
def test_where_nothing_announces_a_wait_times_out_and_leaving_the_watch_wakes_it(signals: Any) -> None:
    assert signals.notifies is False
    with signals.watch("j") as wait_changed:
        signals.job_changed("j")
        assert wait_changed(0.01) is False
    watch = ChangeWatch()
    waiter = threading.Thread(target=lambda: watch.wait(3600))
    waiter.start()
    watch.close()
    waiter.join(30)
    assert not waiter.is_alive()
