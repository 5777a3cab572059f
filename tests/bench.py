"""`make bench`: the platform's key figures, each beside its baseline measured in the same run, as one JSON
document on stdout (the Makefile keeps a copy in .dev/bench.json). Progress goes to stderr.

- submit_to_result: a user's `print(1)` python job on the local stack (a subprocess), from POST to the
  terminal `GET ?wait` (the worker's announcement wakes it), median and p90 of 20 after a warm-up; beside the
  bare interpreter running the same program.
- burst: 200 trivial jobs from 16 submitting threads on one enterprise key: jobs/s end to end, submits/s
  alone, and any refusal; beside a plain `subprocess.run` loop of the same program on the same machine.
- sandbox_overhead: the local sandbox's `print(1)` against the bare interpreter (devtools/sandbox_bench.py).
- import_time: `python -X importtime -c "import app"` (every function's cold start) and the sandbox
  function's entry, beside the bare interpreter's start.
- first_invocation: CPU time of `import app` plus the first event of the API and of a worker, each in a fresh
  interpreter (tests/bench_cold_start.py): what a cold start costs once work is deferred to first use.
- aws_requests_per_submit / aws_requests_per_job: the AWS requests of one accepted submit, and of one whole
  job (submit, the worker's run, one `GET ?wait`), counted in-process against a moto server with botocore
  hooks, by operation; a whole job both as the local stack runs it (changes announced) and as AWS does (polls).
- machine: cores, Python, and the load average before and after (other work on the machine skews figures).
- estimated_wait: `estimated_wait_s` at submit against the real wait, per scenario (tests/bench_estimates.py).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

JOB = {"runtime": "python", "source": "print(1)"}


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


# -- AWS requests --------------------------------------------------------------------------------------------
class RequestCounter:
    """Counts the requests some boto3 clients send, by `service.Operation`, with their start and end times.

    Use as a context manager: the hooks are removed on exit."""

    def __init__(self, *clients: Any) -> None:
        self.clients = clients
        self.calls: list[list[Any]] = []  # [operation, thread, started, ended]
        self._lock = threading.Lock()

    def __enter__(self) -> RequestCounter:
        for client in self.clients:
            client.meta.events.register("before-send", self._sent)
            client.meta.events.register("response-received", self._received)
        return self

    def __exit__(self, *_: Any) -> None:
        for client in self.clients:
            client.meta.events.unregister("before-send", self._sent)
            client.meta.events.unregister("response-received", self._received)

    def _sent(self, event_name: str, **_: Any) -> None:
        operation = event_name.split(".", 1)[1]
        with self._lock:
            self.calls.append([operation, threading.get_ident(), time.perf_counter(), None])

    def _received(self, event_name: str, **_: Any) -> None:
        operation, now, me = event_name.split(".", 1)[1], time.perf_counter(), threading.get_ident()
        with self._lock:
            for call in reversed(self.calls):
                if call[0] == operation and call[1] == me and call[3] is None:
                    call[3] = now
                    return

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()

    @property
    def total(self) -> int:
        return len(self.calls)

    def by_operation(self) -> dict[str, int]:
        return dict(sorted(Counter(call[0] for call in self.calls).items()))

    def round_trips(self) -> int:
        """Requests that had to wait for each other: overlapping requests count as one round trip."""
        trips, busy_until = 0, float("-inf")
        for _, _, started, ended in sorted(self.calls, key=lambda c: c[2]):
            if started >= busy_until:
                trips += 1
            busy_until = max(busy_until, ended if ended is not None else started)
        return trips


def aws_requests_per_submit(samples: int = 10) -> dict[str, Any]:
    """Submit in-process against a moto server; the first submit of a process also looks up the queue URL
    and reads the run-time stats (cached per process), so it is shown apart."""
    from chalicelib.adapters.aws import client
    from chalicelib.services.keys import create_key
    from chalicelib.services.submit import submit_job

    with _moto_stack() as deps:
        key, other = (create_key(deps, owner, "enterprise")[0] for owner in ("bench", "bench-2"))
        with RequestCounter(client("dynamodb"), client("sqs")) as counter:

            def counted(plain: str) -> dict[str, Any]:
                counter.reset()
                submit_job(deps, plain, JOB)
                return {"requests": counter.total, "round_trips": counter.round_trips(), **counter.by_operation()}

            cold = counted(key)
            steady = [counted(key) for _ in range(samples)]
            new_window = counted(other)
    typical = statistics.mode(json.dumps(s, sort_keys=True) for s in steady)  # a minute may roll over once
    usual = json.loads(typical)
    return {
        "samples": samples,
        "requests": usual["requests"],
        "sequential_round_trips": usual["round_trips"],
        "by_operation": {k: v for k, v in usual.items() if "." in k},
        "first_submit_of_a_process": cold,
        "first_submit_of_a_key_in_a_minute": new_window,
        "note": "a key's first submit in a minute misses the one-request quota fast path (stale window): "
        "the refused update returns the item, so one more UpdateItem and no read; "
        "the first submit of a process also looks up the queue URL and reads the "
        "run-time stats (cached 10 s)",
    }


def aws_requests_per_job(source: str = "print(1)", announced: bool = True) -> dict[str, Any]:
    """One whole job in-process against a moto server: submit, a `GET ?wait=20` in another thread, the worker's
    receive, run (the local sandbox) and delete. `announced`: job changes are announced as in the local stack
    (else polled as in AWS). The first job of the process warms the lookups and is not counted."""
    from chalicelib.adapters.aws import client
    from chalicelib.services.signals import InProcessSignals, PolledJobSignals

    with _moto_stack() as deps:
        deps.signals = InProcessSignals() if announced else PolledJobSignals()
        key = _enterprise_key(deps)
        _one_job(deps, key, "print(1)")
        with RequestCounter(client("dynamodb"), client("sqs")) as counter:
            status = _one_job(deps, key, source)
    assert status == "succeeded", status
    return {"requests": counter.total, "by_operation": counter.by_operation()}


def _one_job(deps: Any, key: str, source: str) -> str:
    """Submit, `GET ?wait=20` in another thread, and the worker loop's part (receive, handle, delete)."""
    from chalicelib.adapters.aws import client
    from chalicelib.services.batch import process_jobs
    from chalicelib.services.keys import authenticate
    from chalicelib.services.queries import get_job
    from chalicelib.services.submit import submit_job
    from devtools.worker import lambda_sqs_record

    sqs, url = client("sqs"), deps.queue.url("enterprise")
    job_id = submit_job(deps, key, {**JOB, "source": source}).job.id
    answer: list[Any] = []
    getter = threading.Thread(target=lambda: answer.append(get_job(deps, authenticate(deps, key), job_id, 20)))
    getter.start()
    messages = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"])["Messages"]
    records = [lambda_sqs_record(message, "arn") for message in messages]
    assert process_jobs(deps, {"Records": records})["batchItemFailures"] == []
    entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"]} for i, r in enumerate(records)]
    sqs.delete_message_batch(QueueUrl=url, Entries=entries)
    getter.join(30)
    return str(answer[0].status) if answer else "no answer"


@contextmanager
def _moto_stack() -> Iterator[Any]:
    """The app wired in this process to a moto server of its own, with fresh tables and queues."""
    from chalicelib import bootstrap
    from devtools.motoserver import start_moto
    from devtools.resources import create_resources
    from devtools.stack import free_port, local_environment

    saved = dict(os.environ)
    port = free_port()
    os.environ["CODERUNNER_STAGE"] = "bench" + uuid.uuid4().hex[:8]  # first: the local names follow the stage
    os.environ.update(local_environment(port))
    server = start_moto(port)
    try:
        bootstrap.reset()
        create_resources(os.environ["CODERUNNER_STAGE"])
        yield bootstrap.get_deps()
    finally:
        server.stop()
        bootstrap.reset()
        os.environ.clear()
        os.environ.update(saved)


def _enterprise_key(deps: Any) -> str:
    from chalicelib.services.keys import create_key

    return create_key(deps, "bench", "enterprise")[0]


# -- baselines -----------------------------------------------------------------------------------------------
def bare_runs(runs: int, source: str = "print(1)") -> list[float]:
    """Wall seconds of `python -c source` run with subprocess.run, one after the other."""
    from chalicelib.sandbox.runtimes import _system_python

    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([_system_python(), "-B", "-c", source], capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    return samples


# -- latency and throughput on the local stack ---------------------------------------------------------------
def submit_to_result(stack: Any, runs: int = 20, warmup: int = 3) -> dict[str, Any]:
    from tests.e2e.stackproc import timestamp

    user = stack.api(stack.make_key("enterprise"))
    for _ in range(warmup):
        assert user.wait(user.submit_ok(JOB))["status"] == "succeeded"
    total, queued, running = [], [], []
    for _ in range(runs):
        started = time.perf_counter()
        job = user.wait(user.submit_ok(JOB))
        total.append(time.perf_counter() - started)
        assert job["status"] == "succeeded" and job["result"]["stdout"] == "1\n", job
        queued.append(timestamp(job["started_at"]) - timestamp(job["created_at"]))
        running.append(timestamp(job["finished_at"]) - timestamp(job["started_at"]))
    bare = bare_runs(runs)
    return {
        "runs": runs,
        "median_ms": _ms(statistics.median(total)),
        "p90_ms": _ms(_percentile(total, 0.9)),
        "min_ms": _ms(min(total)),
        "max_ms": _ms(max(total)),
        "server_side_median_ms": {
            "queue_wait": _ms(statistics.median(queued)),
            "started_to_finished": _ms(statistics.median(running)),
        },
        "baseline_bare_interpreter_median_ms": _ms(statistics.median(bare)),
        "note": "POST /v1/jobs, then GET /v1/jobs/{id}?wait=20 (woken by the worker's announcement); the "
        "baseline runs `python -c 'print(1)'` with subprocess.run",
    }


def burst(stack: Any, jobs: int = 200, threads: int = 16) -> dict[str, Any]:
    """`jobs` trivial jobs submitted by `threads` threads on a fresh enterprise key; then each is waited for."""
    user = stack.api(stack.make_key("enterprise"))
    assert user.wait(user.submit_ok(JOB))["status"] == "succeeded"  # the key's first charge, a warm stack
    codes: Counter[str] = Counter()

    def submit(_: int) -> str | None:
        resp = user.submit(JOB)
        codes[str(resp.status) if resp.status == 202 else f"{resp.status} {resp.error_code}"] += 1
        return str(resp.body["id"]) if resp.status == 202 else None

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        ids = [i for i in pool.map(submit, range(jobs)) if i]
        submitted = time.perf_counter() - started
        finished = list(pool.map(lambda job_id: user.wait(job_id, 300), ids))
    total = time.perf_counter() - started
    bare = bare_runs(jobs)
    statuses = Counter(str(job["status"]) for job in finished)
    return {
        "jobs": jobs,
        "threads": threads,
        "jobs_per_s": round(len(ids) / total, 1),
        "submits_per_s": round(jobs / submitted, 1),
        "end_to_end_s": round(total, 2),
        "responses": dict(codes),
        "statuses": dict(statuses),
        "baseline_subprocess_loop_jobs_per_s": round(jobs / sum(bare), 1),
        "note": "all submitted from a thread pool, then each waited for with GET ?wait from the same pool; "
        "the baseline runs the same program `jobs` times in a plain subprocess.run loop",
    }


# -- cold start ----------------------------------------------------------------------------------------------
def import_time(module: str, runs: int = 5) -> dict[str, Any]:
    """`python -X importtime -c "import <module>"`: the module's cumulative import time (median of `runs`),
    and whether boto3 or moto come with it."""
    cumulative, imported = [], set()
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        ).stderr
        for line in out.splitlines():
            if line.startswith("import time:") and "|" in line:
                _, cumul, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
                imported.add(name.split(".")[0])
                if name == module:
                    cumulative.append(int(cumul) / 1000)
    return {
        "median_ms": round(statistics.median(cumulative), 1),
        "imports_boto3": "boto3" in imported,
        "imports_moto": "moto" in imported,
    }


def cold_start(runs: int = 5) -> dict[str, Any]:
    bare = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - started)
    return {
        "import_app": import_time("app", runs),
        "import_sandbox_entry": import_time("chalicelib.sandbox.lambda_entry", runs),
        "baseline_bare_interpreter_start_ms": _ms(statistics.median(bare)),
        "note": "cumulative import time from -X importtime, median; the sandbox function runs app.py's "
        "`sandbox` handler, which imports chalicelib.sandbox.lambda_entry after app",
    }


# -----------------------------------------------------------------------------------------------------------
def _timed(figures: dict[str, Any], name: str, measure: Callable[[], Any]) -> None:
    _log(f"{name} ...")
    started = time.perf_counter()
    figures[name] = measure()
    _log(f"{name}: {round(time.perf_counter() - started, 1)} s")


def main() -> dict[str, Any]:
    from devtools.sandbox_bench import measure
    from tests.bench_cold_start import figure as first_invocation
    from tests.bench_estimates import estimate_accuracy
    from tests.e2e.stackproc import start_stack

    workers = int(os.environ.get("CODERUNNER_WORKER_PROCESSES", "2"))  # as `make dev` runs
    figures: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": os.getloadavg()},
        "stack": {"worker_processes": workers},
    }
    with tempfile.TemporaryDirectory(prefix="coderunner-bench-") as scratch:
        # The cleanup cadence `make dev` runs (the tests' 1 s pass would cost this stack CPU the jobs need).
        stack = start_stack(Path(scratch), workers=workers, settings={"CODERUNNER_REAP_EVERY_S": "10"})
        try:
            _timed(figures, "submit_to_result", lambda: submit_to_result(stack))
            _timed(figures, "burst", lambda: burst(stack))
        finally:
            stack.stop()
    _timed(figures, "sandbox_overhead", lambda: measure(30))
    _timed(figures, "cold_start", cold_start)
    _timed(figures, "first_invocation", first_invocation)
    _timed(figures, "aws_requests_per_submit", aws_requests_per_submit)
    _timed(
        figures,
        "aws_requests_per_job",
        lambda: {
            "local_announced": aws_requests_per_job(),
            "aws_polled": aws_requests_per_job(announced=False),
            "running_2s_local_announced": aws_requests_per_job("import time; time.sleep(2); print(1)"),
            "running_2s_aws_polled": aws_requests_per_job("import time; time.sleep(2); print(1)", announced=False),
            "note": "submit + worker (receive, start, run, finish, delete) + one GET ?wait=20 issued right "
            "after the submit; the first job of the process is not counted",
        },
    )
    _timed(figures, "estimated_wait", estimate_accuracy)  # a stack of its own: fresh statistics
    figures["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=2), flush=True)
    return figures


if __name__ == "__main__":
    main()
