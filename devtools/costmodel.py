"""The price of a measured trivial job (devtools/cost.py), per million jobs, line by line."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from devtools.cost import (
    ACCESS_LOG_BYTES,
    FULL_VCPU_MB,
    INVOKE_OVERHEAD_S,
    PICKUP_S,
    PLATFORM_LOG_BYTES,
    PRICES,
    PRICES_READ,
    ROOT,
    ROUND_TRIP_S,
    Invocation,
    Measurement,
    per_job_tables,
)

MILLION = 1_000_000
CHALICE_STAGE = "dev"


@dataclass(frozen=True)
class Line:
    item: str
    quantity: float  # per job
    unit: str
    price: str  # key of PRICES

    @property
    def usd_per_million(self) -> float:
        return self.quantity * PRICES[self.price][0] * MILLION


def memory_mb(function: str, stage: str = CHALICE_STAGE) -> int:
    """The memory .chalice/config.json gives app function `function`, resolved as `chalice package` does."""
    from chalice.config import Config
    from chalice.constants import DEFAULT_LAMBDA_MEMORY_SIZE

    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    resolved = Config(chalice_stage=stage, function_name=function, config_from_disk=config)
    return int(resolved.lambda_memory_size or DEFAULT_LAMBDA_MEMORY_SIZE)


def sandbox_function(job_memory_mb: int) -> str:
    """The sandbox function the Lambda adapter invokes for a job with this memory limit."""
    from chalicelib.sandbox import selection

    pick = getattr(selection, "sandbox_function_name", None)
    return str(pick(job_memory_mb)) if pick is not None else "sandbox"


def platform_logs_dropped(function: str) -> bool:
    """True when the packaged template sets the functions' system log level above INFO (no START/END/REPORT)."""
    from infra import wiring

    logging_config = getattr(wiring, "FUNCTION_LOGGING", {})
    return logging_config.get("SystemLogLevel") in ("WARN", "ERROR", "FATAL")


def cpu_in(memory: int, cpu_s: float) -> float:
    """CPU time measured on a full core, stretched to the vCPU share Lambda gives `memory` MB."""
    return cpu_s * max(1.0, FULL_VCPU_MB / memory)


def round_trips(invocation: Invocation) -> float:
    return sum(ROUND_TRIP_S.get(service, 0.01) * n for service, n in invocation.requests.items())


def first_poll_after(ready_s: float) -> float:
    """When a `GET ?wait` that started at 0 sees a job that became terminal at `ready_s`: at its first read
    after then, on chalicelib/services/queries.py's schedule."""
    from chalicelib.services.queries import poll_delays

    at = 0.0
    for delay in poll_delays():
        if at >= ready_s:
            return at
        at += delay
    raise AssertionError("unreachable")


def billed_durations(m: Measurement) -> list[tuple[Invocation, float]]:
    """Each invocation with the seconds Lambda would bill it (rounded up to the millisecond): its CPU time at
    its memory, plus its AWS round trips; a worker also waits for its sandbox invocations, and the long-poll
    GET for its job (picked up, run by the worker, then seen by the GET's next poll)."""
    by_job: dict[int, list[Invocation]] = defaultdict(list)
    for invocation in m.invocations:
        by_job[invocation.job].append(invocation)
    out = []
    for invocations in by_job.values():
        own = {id(i): cpu_in(memory_mb(i.function), i.cpu_s) + round_trips(i) for i in invocations}
        sandboxes = sum(own[id(i)] + INVOKE_OVERHEAD_S for i in invocations if i.kind == "sandbox")
        worker = sum(own[id(i)] for i in invocations if i.kind == "worker") + sandboxes
        for i in invocations:
            seconds = own[id(i)]
            if i.kind == "worker":
                seconds += sandboxes
            elif i.kind == "get":
                memory = memory_mb(i.function)
                seconds = cpu_in(memory, i.cpu_s) + first_poll_after(PICKUP_S + worker) + 2 * ROUND_TRIP_S["dynamodb"]
            out.append((i, math.ceil(seconds * 1000) / 1000))
    return out


def lines(m: Measurement) -> list[Line]:
    """Every line item of one trivial job, from what was counted."""
    jobs, usage = m.jobs, m.usage
    out = [
        Line("API Gateway HTTP API requests", m.api_requests / jobs, "requests", "apigw_http_request"),
        Line("Lambda requests", len(m.invocations) / jobs, "invocations", "lambda_request"),
    ]
    gb_seconds: dict[str, float] = defaultdict(float)
    for invocation, seconds in billed_durations(m):
        gb_seconds[invocation.function] += seconds * memory_mb(invocation.function) / 1024
    for function, total in sorted(gb_seconds.items()):
        label = f"Lambda GB-s {function} ({memory_mb(function)} MB)"
        out.append(Line(label, total / jobs, "GB-s", "lambda_gb_second"))
    out.append(Line("DynamoDB write request units", usage.total_wru() / jobs, "WRU", "dynamodb_wru"))
    out.append(Line("DynamoDB read request units", usage.total_rru() / jobs, "RRU", "dynamodb_rru"))
    sqs = sum(v for k, v in usage.requests.items() if k.startswith("sqs."))
    out.append(Line("SQS FIFO requests", sqs / jobs, "requests", "sqs_fifo_request"))
    puts = sum(v for k, v in usage.requests.items() if k in ("s3.PutObject", "s3.CopyObject", "s3.ListObjectsV2"))
    gets = sum(v for k, v in usage.requests.items() if k.startswith("s3.")) - puts
    out.append(Line("S3 PUT requests", puts / jobs, "requests", "s3_put"))
    out.append(Line("S3 GET requests", gets / jobs, "requests", "s3_get"))
    platform = sum(0 if platform_logs_dropped(i.function) else PLATFORM_LOG_BYTES for i in m.invocations)
    log_bytes = m.log_bytes + m.metric_bytes + platform + m.api_requests * ACCESS_LOG_BYTES
    out.append(Line("CloudWatch Logs ingestion", log_bytes / jobs / 1e9, "GB", "logs_ingested_gb"))
    return out


def figures(m: Measurement) -> dict[str, Any]:
    items = lines(m)
    total = sum(line.usd_per_million for line in items)
    durations: dict[str, list[float]] = defaultdict(list)
    billed: dict[str, list[float]] = defaultdict(list)
    cpu: dict[str, list[float]] = defaultdict(list)
    for invocation, seconds in billed_durations(m):
        durations[f"{invocation.function}:{invocation.kind}"].append(invocation.wall_s)
        billed[f"{invocation.function}:{invocation.kind}"].append(seconds)
        cpu[f"{invocation.function}:{invocation.kind}"].append(invocation.cpu_s)
    return {
        "jobs_measured": m.jobs,
        "tier": m.tier,
        "prices_read": PRICES_READ,
        "lines": [
            {"item": li.item, "per_job": li.quantity, "unit": li.unit, "usd_per_million": li.usd_per_million}
            for li in items
        ],
        "per_job": per_job_tables(m.usage, m.jobs),
        "aws_requests_per_job": sum(m.usage.requests.values()) / m.jobs,
        "idle_empty_receives": m.usage.empty_receives,
        "log_lines_per_job": m.log_lines / m.jobs,
        "metric_lines_per_job": m.metric_lines / m.jobs,
        "mean_local_wall_ms": {f: round(1000 * sum(v) / len(v), 1) for f, v in sorted(durations.items())},
        "mean_billed_ms": {f: round(1000 * sum(v) / len(v), 1) for f, v in sorted(billed.items())},
        "mean_cpu_ms": {f: round(1000 * sum(v) / len(v), 1) for f, v in sorted(cpu.items())},
        "cost_per_million_usd": round(total, 2),
    }


def report(m: Measurement, as_json: bool = False) -> str:
    data = figures(m)
    rows = [f"Cost of one million trivial jobs ({m.tier} tier, print(1) in Python; {m.jobs} measured), "]
    rows[0] += f"us-east-1 on-demand prices read {PRICES_READ}"
    rows.append(f"{'line item':<44} {'per job':>12} {'unit':<11} {'USD per million':>15}")
    for line in data["lines"]:
        rows.append(f"{line['item']:<44} {line['per_job']:>12.5g} {line['unit']:<11} {line['usd_per_million']:>15.2f}")
    rows.append("")
    rows.append(f"AWS requests per job: {data['aws_requests_per_job']:.2f}")
    for name, count in data["per_job"]["requests"].items():
        rows.append(f"  {name:<40} {count:.2f}")
    rows.append("DynamoDB write units per job, by table and index:")
    for name, units in data["per_job"]["dynamodb_wru"].items():
        rows.append(f"  {name:<40} {units:.2f}")
    rows.append("DynamoDB read units per job:")
    for name, units in data["per_job"]["dynamodb_rru"].items():
        rows.append(f"  {name:<40} {units:.2f}")
    rows.append(f"log lines per job: {data['log_lines_per_job']:.1f}, metric lines: {data['metric_lines_per_job']:.1f}")
    rows.append(f"CPU time per invocation, measured (ms): {data['mean_cpu_ms']}")
    rows.append(f"billed duration per invocation, modelled (ms): {data['mean_billed_ms']}")
    rows.append(f"wall time per invocation on this machine, for reference (ms): {data['mean_local_wall_ms']}")
    rows.append(f"idle empty receives while measuring (not charged to jobs): {data['idle_empty_receives']}")
    if as_json:
        rows.append(json.dumps(data, indent=2))
    rows.append(f"cost_per_million_usd={data['cost_per_million_usd']:.2f}")
    return "\n".join(rows)
