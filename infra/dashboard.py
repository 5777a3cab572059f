"""The operations dashboard: queues per tier, jobs by status from the app's own metrics, run time, errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chalicelib.adapters.metrics import NAMESPACE
from chalicelib.config import APP_NAME
from chalicelib.metric_names import FARGATE_LAUNCH_FAILURES
from infra.alarms import POWERTOOLS_SERVICE as SERVICE
from infra.state import queue_id

WIDTH, HEIGHT = 8, 6
API_STAGE = "$default"  # the HTTP API's stage (its metrics' Stage dimension); Fn::Sub leaves "$name" alone


def _widget(title: str, metrics: list[Any], stat: str = "Sum", **extra: Any) -> dict[str, Any]:
    return {
        "type": "metric",
        "width": WIDTH,
        "height": HEIGHT,
        "properties": {
            "title": title,
            "region": "${AWS::Region}",
            "view": "timeSeries",
            "stat": stat,
            "period": 60,
            "metrics": metrics,
            **extra,
        },
    }


def _search(metric: str, dimensions: str) -> list[dict[str, str]]:
    """Every series of one of the app's metrics with exactly these dimensions (one line per combination)."""
    expression = f"SEARCH('{{{NAMESPACE},{dimensions}}} MetricName=\"{metric}\"', 'Sum', 300)"
    return [{"expression": expression, "id": metric.lower()}]


def _per_tier(tiers: Sequence[str], metric: str, stat: str) -> list[Any]:
    return [[NAMESPACE, metric, *SERVICE, "tier", tier, {"stat": stat, "label": f"{tier} {stat}"}] for tier in tiers]


def _queues(tiers: Sequence[str], metric: str, dead_letter: bool = False) -> list[Any]:
    return [
        ["AWS/SQS", metric, "QueueName", f"${{{queue_id(tier, dead_letter)}.QueueName}}", {"label": tier}]
        for tier in tiers
    ]


def _functions(metric: str, functions: dict[str, str]) -> list[Any]:
    return [["AWS/Lambda", metric, "FunctionName", f"${{{fid}}}", {"label": label}] for fid, label in functions.items()]


def _api(metric: str, **options: str) -> list[Any]:
    """A metric of the HTTP API's `$default` stage (infra/cfn/api.json)."""
    return ["AWS/ApiGateway", metric, "ApiId", "${HttpApi}", "Stage", API_STAGE, options]


def widgets(functions: dict[str, str], alarms: list[str], tiers: Sequence[str]) -> list[dict[str, Any]]:
    """Every widget, in reading order; `functions` maps function logical id -> label."""
    depth = _queues(tiers, "ApproximateNumberOfMessagesVisible")
    return [
        {
            "type": "alarm",
            "width": 24,
            "height": 3,
            "properties": {"title": "Alarms", "alarms": [f"${{{alarm}.Arn}}" for alarm in alarms]},
        },
        _widget("Queued jobs by tier", depth, stat="Maximum"),
        _widget("Oldest queued job by tier (s)", _queues(tiers, "ApproximateAgeOfOldestMessage"), stat="Maximum"),
        _widget("Dead-letter queues (received)", _queues(tiers, "NumberOfMessagesReceived", dead_letter=True)),
        _widget("Jobs finished by status", _search("JobsFinished", "service,status,tier")),
        _widget("Jobs submitted by tier", _search("JobsSubmitted", "service,tier")),
        _widget("Submits rejected by reason", _search("JobsRejected", "reason,service,tier")),
        _widget(
            "Run time by tier (ms)", _per_tier(tiers, "RunTime", "p50") + _per_tier(tiers, "RunTime", "p90"), period=300
        ),
        _widget("Queue wait by tier (ms)", _per_tier(tiers, "QueueWait", "p90"), period=300),
        _widget("Sandbox overhead (ms)", _search("SandboxOverhead", "sandbox,service,tier")),
        _widget("Function errors", _functions("Errors", functions)),
        _widget("Throttles", _functions("Throttles", functions)),
        _widget("Fargate launch failures by tier", _per_tier(tiers, FARGATE_LAUNCH_FAILURES, "Sum")),
        _widget("API responses", [_api(name, label=name) for name in ("Count", "4xx", "5xx")]),
        _widget(
            "API latency (ms)",
            [_api("Latency", stat=stat, label=stat) for stat in ("p50", "p99")],
            stat="p99",
            period=300,
        ),
    ]


def dashboard(functions: dict[str, str], alarms: list[str], tiers: Sequence[str]) -> dict[str, Any]:
    """The AWS::CloudWatch::Dashboard resource; its body is one Fn::Sub over the JSON."""
    body = json.dumps({"widgets": widgets(functions, alarms, tiers)}, separators=(",", ":"))
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardName": {"Fn::Sub": f"{APP_NAME}-${{Stage}}"}, "DashboardBody": {"Fn::Sub": body}},
    }
