"""`make bench`: the platform's key figures as one JSON document on stdout (the Makefile keeps a copy in
.dev/bench.json). Progress goes to stderr.

- submit_to_result: a user's `print(1)` python job on the local stack (a subprocess), from POST to the
  terminal GET (long-poll), median and p90 of 20 after a warm-up; with the server-side parts.
- sandbox_overhead: the local sandbox's `print(1)` against the bare interpreter (devtools/sandbox_bench.py).
- aws_requests_per_submit: the AWS requests one accepted submit makes, counted in-process against a moto
  server with a botocore `before-send` hook, by operation, and how many sequential round trips they take.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
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
    from chalicelib import bootstrap
    from chalicelib.adapters.aws import client
    from chalicelib.services.keys import create_key
    from chalicelib.services.submit import submit_job
    from devtools.motoserver import start_moto
    from devtools.resources import create_resources
    from devtools.stack import free_port, local_environment

    port = free_port()
    os.environ["CODERUNNER_STAGE"] = "bench" + uuid.uuid4().hex[:8]  # first: the local names follow the stage
    os.environ.update(local_environment(port))
    server = start_moto(port)
    try:
        bootstrap.reset()
        create_resources(os.environ["CODERUNNER_STAGE"])
        deps = bootstrap.get_deps()
        key, other = (create_key(deps, owner, "enterprise")[0] for owner in ("bench", "bench-2"))
        with RequestCounter(client("dynamodb"), client("sqs")) as counter:

            def counted(plain: str) -> dict[str, Any]:
                counter.reset()
                submit_job(deps, plain, JOB)
                return {"requests": counter.total, "round_trips": counter.round_trips(), **counter.by_operation()}

            cold = counted(key)
            steady = [counted(key) for _ in range(samples)]
            new_window = counted(other)
    finally:
        server.stop()
        bootstrap.reset()
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


# -- latency on the local stack ------------------------------------------------------------------------------
def submit_to_result(runs: int = 20, warmup: int = 3) -> dict[str, Any]:
    from tests.e2e.stackproc import start_stack, timestamp

    with tempfile.TemporaryDirectory(prefix="coderunner-bench-") as scratch:
        stack = start_stack(Path(scratch))
        try:
            user = stack.api(stack.keys["enterprise"])
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
        finally:
            stack.stop()
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
        "note": "POST /v1/jobs, then GET /v1/jobs/{id}?wait=20 (the server polls the job at 0.1 s, x1.5 each time)",
    }


def main() -> dict[str, Any]:
    from devtools.sandbox_bench import measure

    figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    _log("submit -> result on the local stack ...")
    figures["submit_to_result"] = submit_to_result()
    _log("sandbox overhead ...")
    figures["sandbox_overhead"] = measure(30)
    _log("AWS requests per submit ...")
    figures["aws_requests_per_submit"] = aws_requests_per_submit()
    print(json.dumps(figures, indent=2), flush=True)
    return figures


if __name__ == "__main__":
    main()
