"""`make cost`: what a million trivial jobs cost on AWS, from the requests one job makes on the local stack.

One process runs the platform as the local stack does: a moto server on 127.0.0.1, the Chalice app (in-process,
through chalice.test.Client, as API Gateway would call it), a worker loop that receives a tier's messages and
calls the same batch handler Lambda calls, and the local sandbox. A trivial job (`print(1)` in Python) is
submitted, run, and fetched with one `GET ?wait=20`, after a warm-up, several times over; every AWS request the
job makes is counted with botocore event hooks (devtools/capacity.py: DynamoDB request units from item sizes,
SQS and S3 requests by operation), its log lines and metrics are counted in bytes, and the API handler, the
worker and the sandbox are timed.

The model then prices, per million jobs, each line of an AWS bill at the on-demand us-east-1 prices of `PRICES`:
API Gateway HTTP API requests, Lambda requests and GB-seconds per function (at the memory .chalice/config.json gives
it, with the CPU time scaled to that memory's share of a vCPU), DynamoDB read and write request units, SQS FIFO
requests, S3 requests, CloudWatch Logs ingestion. The last line is `cost_per_million_usd=<number>`.

What it leaves out (no per-job cost, or not this code's): the free tiers, data transfer out, DynamoDB and S3
storage (a job's records expire after the TTL), custom metrics (billed per metric a month, not per job), the
event source mappings' empty receives while idle (shown, not charged to jobs), Lambda cold starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.capacity import AwsMeter, Usage, by_table

ROOT = Path(__file__).resolve().parents[1]
CHALICE_STAGE = "dev"
JOB = {"runtime": "python", "source": "print(1)"}

# On-demand prices in us-east-1, USD. Read 2026-11-30 from the AWS pricing pages (API Gateway, Lambda,
# DynamoDB on-demand after the November 2024 cut, SQS, S3, CloudWatch) and cross-checked against two
# third-party summaries of them. One table: change a price here and every line follows.
PRICES_READ = "2026-11-30"
PRICES: dict[str, tuple[float, str]] = {
    # The deployed API is an HTTP API (infra/cfn/api.json). A request is metered per 512 KB of its data (a 513 KB
    # one counts twice); a trivial job's requests are far below that, so requests are counted one each.
    "apigw_http_request": (1.00 / 1e6, "API Gateway HTTP API, per request (first 300 million a month)"),
    "lambda_request": (0.20 / 1e6, "Lambda, per request"),
    "lambda_gb_second": (0.0000166667, "Lambda x86, per GB-second"),
    "dynamodb_wru": (0.625 / 1e6, "DynamoDB on-demand, per write request unit"),
    "dynamodb_rru": (0.125 / 1e6, "DynamoDB on-demand, per read request unit"),
    "sqs_fifo_request": (0.50 / 1e6, "SQS FIFO, per request (64 KB chunk)"),
    "s3_put": (0.005 / 1000, "S3 Standard, per PUT/COPY/POST/LIST request"),
    "s3_get": (0.0004 / 1000, "S3 Standard, per GET and other request"),
    "logs_ingested_gb": (0.50, "CloudWatch Logs standard ingestion, per GB"),
}
# Lambda gives a function one vCPU at 1,769 MB, in proportion below: CPU-bound time stretches at less memory.
FULL_VCPU_MB = 1769
# CloudWatch Logs counts 26 bytes of metadata per log event on top of its message.
LOG_EVENT_OVERHEAD = 26
# Lambda's own START, END and REPORT lines for each invocation (text format, typical lengths), unless the
# function's logging config drops them (a system log level above INFO).
PLATFORM_LOG_BYTES = 70 + 52 + 165 + 3 * LOG_EVENT_OVERHEAD
# One API Gateway access log line (the JSON format of infra/cfn/api.json, typical values: 332 bytes) per request.
ACCESS_LOG_BYTES = 330 + LOG_EVENT_OVERHEAD


# How long one AWS request keeps a function waiting in the cloud (typical same-region round trips), and when
# an event source mapping hands a new FIFO message to a worker. The billed durations below are built from these,
# the requests each invocation was counted making, and the CPU time it was measured using: the wall times of a
# moto server on a shared laptop say little about AWS, and they are printed only for reference.
ROUND_TRIP_S = {"dynamodb": 0.006, "sqs": 0.010, "s3": 0.020}
INVOKE_OVERHEAD_S = 0.015  # a synchronous Lambda invoke of a warm function, on top of its duration
PICKUP_S = 0.1  # SQS send -> the worker's invocation starts


@dataclass
class Invocation:
    function: str  # app.py's name: api_handler, worker_pro, sandbox_256, ...
    kind: str  # submit | get | worker | sandbox
    job: int
    wall_s: float
    cpu_s: float
    requests: Counter[str] = field(default_factory=Counter)  # AWS requests it made, by service


@dataclass
class Measurement:
    jobs: int
    tier: str
    usage: Usage
    invocations: list[Invocation]
    api_requests: int
    log_lines: int
    log_bytes: int
    metric_lines: int
    metric_bytes: int
    statuses: list[str] = field(default_factory=list)


# -- the harness ------------------------------------------------------------------------------------------------
class LogMeter:
    """Counts the log records the app emits at INFO and above, in bytes of Powertools' JSON (as in Lambda)."""

    PREFIXES = ("chalicelib", "code-runner", "app")

    def __init__(self) -> None:
        from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

        self.formatter = LambdaPowertoolsFormatter()
        self.lines = self.bytes = 0
        self._lock = threading.Lock()
        self._original = logging.Logger.callHandlers

    def __enter__(self) -> LogMeter:
        meter, original = self, self._original

        def call_handlers(logger: logging.Logger, record: logging.LogRecord) -> None:
            if record.name.startswith(meter.PREFIXES) and record.levelno >= logging.INFO:
                meter.count(record)  # counted, not printed: the report is the output
            else:
                original(logger, record)

        logging.Logger.callHandlers = call_handlers  # type: ignore[method-assign,assignment]
        logging.getLogger("chalicelib").setLevel(logging.INFO)  # what POWERTOOLS_LOG_LEVEL=INFO gives in Lambda
        return self

    def __exit__(self, *_: Any) -> None:
        logging.Logger.callHandlers = self._original  # type: ignore[method-assign]

    def count(self, record: logging.LogRecord) -> None:
        size = len(self.formatter.format(record).encode()) + 1 + LOG_EVENT_OVERHEAD
        with self._lock:
            self.lines += 1
            self.bytes += size

    def reset(self) -> tuple[int, int]:
        with self._lock:
            out, self.lines, self.bytes = (self.lines, self.bytes), 0, 0
        return out


class MetricMeter:
    """Stands in for the cloud's metrics sink: buffers each thread's points and, on `flush` (an invocation's
    end, as app.py's handlers call it), counts the EMF lines `EmfMetrics` would write, in bytes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lines = self.bytes = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def add(self, name: str, value: float, unit: str, dims: dict[str, str]) -> None:
        if not hasattr(self._local, "points"):
            self._local.points = []
        self._local.points.append((name, value, unit, dims))
        if self.inner is not None:
            self.inner.add(name, value, unit, dims)

    def flush(self) -> None:
        from chalicelib.adapters.metrics import emf_lines

        points, self._local.points = getattr(self._local, "points", []), []
        lines = emf_lines(points)
        with self._lock:
            self.lines += len(lines)
            self.bytes += sum(len(line.encode()) + 1 + LOG_EVENT_OVERHEAD for line in lines)

    def reset(self) -> tuple[int, int]:
        with self._lock:
            out, self.lines, self.bytes = (self.lines, self.bytes), 0, 0
        return out


class Recorder:
    """Collects invocations; each takes the AWS requests its thread made from the meter when it ends."""

    def __init__(self) -> None:
        self.invocations: list[Invocation] = []
        self.meter: AwsMeter | None = None
        self.job = -1
        self._lock = threading.Lock()
        self._handed: dict[int, float] = {}  # CPU time a thread spent inside the sandbox (not its own)

    def record(self, function: str, kind: str, wall_s: float, cpu_s: float) -> None:
        requests, overhead = Counter[str](), 0.0
        if self.meter is not None and kind != "sandbox":  # the sandbox makes no request: its worker's stay its
            requests, overhead = self.meter.take_thread_requests()
        cpu_s -= overhead  # the meter's own reads are no part of the invocation
        with self._lock:
            if kind != "sandbox":
                cpu_s -= self._handed.pop(threading.get_ident(), 0.0)
            self.invocations.append(Invocation(function, kind, self.job, wall_s, cpu_s, requests))

    def hand_to_sandbox(self, cpu_s: float) -> None:
        """The calling thread ran `cpu_s` of sandbox work (the local sandbox runs its parent side in-thread)."""
        with self._lock:
            self._handed[threading.get_ident()] = self._handed.get(threading.get_ident(), 0.0) + cpu_s

    def reset(self) -> None:
        with self._lock:
            self.invocations.clear()


class TimedSandbox:
    """The local sandbox, timed: each run is one invocation of the sandbox function its job would get. Its CPU
    time is the supervisor's and the program's (children of this process, counted once reaped). Like the
    Lambda sandbox it stands for, it cannot be interrupted: the worker runs it unwatched, as in the cloud."""

    cancellable = False

    def __init__(self, inner: Any, recorder: Recorder) -> None:
        self.inner, self.recorder = inner, recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def run(self, request: Any, cancel: Any = None) -> Any:
        from devtools.costmodel import sandbox_function

        before, started, in_thread = os.times(), time.perf_counter(), time.thread_time()
        try:
            return self.inner.run(request, cancel=cancel)
        finally:
            after, in_thread = os.times(), time.thread_time() - in_thread
            cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
            wall = time.perf_counter() - started
            self.recorder.hand_to_sandbox(in_thread)
            self.recorder.record(sandbox_function(request.limits.memory_mb), "sandbox", wall, cpu + in_thread)


class WorkerLoop(threading.Thread):
    """Receives one tier's messages one at a time and calls the batch handler, as the event source mapping
    does with batch_size=1, deleting what the handler did not report failed (DeleteMessageBatch)."""

    def __init__(self, deps: Any, tier: str, recorder: Recorder) -> None:
        super().__init__(name=f"cost-worker-{tier}", daemon=True)
        from chalicelib.adapters.aws import client

        self.deps, self.tier, self.recorder = deps, tier, recorder
        self.sqs = client("sqs")
        self.url = deps.queue.url(tier)
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])["Attributes"]
        self.arn = attributes["QueueArn"]
        self.stop = threading.Event()
        self.handled = 0

    def run(self) -> None:
        while not self.stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=1, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
            ).get("Messages", [])
            for message in messages:
                self._handle(message)
                self.handled += 1

    def _handle(self, message: dict[str, Any]) -> None:
        from chalicelib.services.batch import process_jobs
        from devtools.worker import lambda_sqs_record

        if self.recorder.meter is not None:
            self.recorder.meter.take_thread_requests()  # the receive is the event source mapping's
        event = {"Records": [lambda_sqs_record(message, self.arn)]}
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            response = process_jobs(self.deps, event)
        finally:
            self.deps.flush_metrics()  # as app.py's worker handler does when the invocation ends
            wall, cpu = time.perf_counter() - started, time.thread_time() - cpu
            self.recorder.record(f"worker_{self.tier}", "worker", wall, cpu)
        if message["MessageId"] not in {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}:
            entry = {"Id": "0", "ReceiptHandle": message["ReceiptHandle"]}
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[entry])

    def wait_for(self, handled: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.handled < handled:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker handled {self.handled} messages, expected {handled}")
            time.sleep(0.01)


def _environment(port: int) -> dict[str, str]:
    from devtools.stack import local_environment

    os.environ["CODERUNNER_STAGE"] = "cost" + uuid.uuid4().hex[:8]  # first: the local names follow the stage
    return local_environment(port)


def measure(jobs: int = 5, tier: str = "pro", warmup: int = 2) -> Measurement:
    """Run `warmup` then `jobs` trivial jobs of `tier` through the platform and count what they did."""
    import boto3

    from devtools.motoserver import start_moto
    from devtools.stack import free_port

    port = free_port()
    os.environ.update(_environment(port))
    server = start_moto(port)
    try:
        return _measure(jobs, tier, warmup, boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}"))
    finally:
        server.stop()
        from chalicelib import bootstrap

        bootstrap.reset()


def _app() -> Any:
    sys.path.insert(0, str(ROOT))
    from app import app

    # Importing the app hands Powertools' INFO level to every registered logger: quiet the tools' own.
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return app


def _measure(jobs: int, tier: str, warmup: int, inspector: Any) -> Measurement:
    from chalice.test import Client

    from chalicelib import bootstrap
    from chalicelib.adapters.aws import client
    from chalicelib.services.keys import create_key
    from devtools.resources import create_resources

    bootstrap.reset()
    create_resources(os.environ["CODERUNNER_STAGE"])
    deps = bootstrap.get_deps()
    recorder = Recorder()
    deps.sandboxes = {kind: TimedSandbox(sandbox, recorder) for kind, sandbox in deps.sandboxes.items()}
    metrics = MetricMeter(deps.metrics)
    deps.metrics = metrics
    key = create_key(deps, "cost", tier)[0]
    app = _app()
    worker = WorkerLoop(deps, tier, recorder)
    clients = {service: client(service).raw for service in ("dynamodb", "sqs", "s3")}
    statuses: list[str] = []
    with Client(app) as api, AwsMeter(clients, inspector) as meter, LogMeter() as logs:
        recorder.meter = meter
        worker.start()
        try:
            for n in range(warmup + jobs):
                if n == warmup:  # the warm-up's queue URL lookups, caches and first minute window are no job's
                    meter.reset(), logs.reset(), metrics.reset()
                    recorder.reset()
                recorder.job = n
                statuses.append(_one_job(api, key, recorder))
                worker.wait_for(n + 1)
        finally:
            worker.stop.set()
            worker.join(timeout=5)
        usage = meter.reset()
        log_lines, log_bytes = logs.reset()
        metric_lines, metric_bytes = metrics.reset()
    return Measurement(
        jobs=jobs,
        tier=tier,
        usage=usage,
        invocations=list(recorder.invocations),
        api_requests=sum(1 for i in recorder.invocations if i.function == "api_handler"),
        log_lines=log_lines,
        log_bytes=log_bytes,
        metric_lines=metric_lines,
        metric_bytes=metric_bytes,
        statuses=statuses[warmup:],
    )


def _one_job(api: Any, key: str, recorder: Recorder) -> str:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(kind: str, method: str, path: str, body: str | None = None) -> dict[str, Any]:
        started, cpu = time.perf_counter(), time.thread_time()
        response = getattr(api.http, method)(path, headers=headers, **({"body": body} if body else {}))
        recorder.record("api_handler", kind, time.perf_counter() - started, time.thread_time() - cpu)
        if response.status_code >= 300:
            raise RuntimeError(f"{method.upper()} {path}: {response.status_code} {response.body!r}")
        return dict(json.loads(response.body))

    job = call("submit", "post", "/v1/jobs", json.dumps(JOB))
    done = call("get", "get", f"/v1/jobs/{job['id']}?wait=20")
    return str(done["status"])


# -- the report -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from devtools.costmodel import report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=5, help="trivial jobs to measure (after a warm-up)")
    parser.add_argument("--tier", default="pro")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    measurement = measure(args.jobs, args.tier)
    if set(measurement.statuses) != {"succeeded"}:
        print(f"the trivial jobs did not all succeed: {Counter(measurement.statuses)}", file=sys.stderr)
        return 1
    print(report(measurement, as_json=args.json))
    return 0


def per_job_tables(usage: Usage, jobs: int) -> dict[str, dict[str, float]]:
    """Requests and request units per job, for the report."""
    return {
        "requests": {k: v / jobs for k, v in sorted(usage.requests.items())},
        "dynamodb_wru": {k: v / jobs for k, v in sorted(usage.wru.items())},
        "dynamodb_rru": {k: v / jobs for k, v in sorted(usage.rru.items())},
        "dynamodb_wru_by_table": {k: v / jobs for k, v in sorted(by_table(usage.wru).items())},
    }


if __name__ == "__main__":
    sys.exit(main())
