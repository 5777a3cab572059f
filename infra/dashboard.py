"""The operations dashboard: queues per tier, jobs by status from the app's own metrics, run time, errors."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.metrics import NAMESPACE
from chalicelib.config import APP_NAME, TIER_NAMES
from infra.wiring import queue_id

SERVICE = ("service", APP_NAME)  # Powertools adds POWERTOOLS_SERVICE_NAME (.chalice/config.json) as a dimension
WIDTH, HEIGHT = 8, 6


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


def _per_tier(metric: str, stat: str) -> list[Any]:
    return [
        [NAMESPACE, metric, *SERVICE, "tier", tier, {"stat": stat, "label": f"{tier} {stat}"}] for tier in TIER_NAMES
    ]


def _queues(metric: str, dead_letter: bool = False) -> list[Any]:
    return [
        ["AWS/SQS", metric, "QueueName", f"${{{queue_id(tier, dead_letter)}.QueueName}}", {"label": tier}]
        for tier in TIER_NAMES
    ]


def _functions(metric: str, functions: dict[str, str]) -> list[Any]:
    return [["AWS/Lambda", metric, "FunctionName", f"${{{fid}}}", {"label": label}] for fid, label in functions.items()]


def widgets(functions: dict[str, str], alarms: list[str], api_stage: str) -> list[dict[str, Any]]:
    """Every widget, in reading order; `functions` maps function logical id -> label."""
    depth = _queues("ApproximateNumberOfMessagesVisible")
    return [
        {
            "type": "alarm",
            "width": 24,
            "height": 3,
            "properties": {"title": "Alarms", "alarms": [f"${{{alarm}.Arn}}" for alarm in alarms]},
        },
        _widget("Queued jobs by tier", depth, stat="Maximum"),
        _widget("Oldest queued job by tier (s)", _queues("ApproximateAgeOfOldestMessage"), stat="Maximum"),
        _widget("Dead-letter queues (received)", _queues("NumberOfMessagesReceived", dead_letter=True)),
        _widget("Jobs finished by status", _search("JobsFinished", "service,status,tier")),
        _widget("Jobs submitted by tier", _search("JobsSubmitted", "service,tier")),
        _widget("Submits rejected by reason", _search("JobsRejected", "reason,service,tier")),
        _widget("Run time by tier (ms)", _per_tier("RunTime", "p50") + _per_tier("RunTime", "p90"), period=300),
        _widget("Queue wait by tier (ms)", _per_tier("QueueWait", "p90"), period=300),
        _widget("Sandbox overhead (ms)", _search("SandboxOverhead", "sandbox,service,tier")),
        _widget("Function errors", _functions("Errors", functions)),
        _widget("Throttles", _functions("Throttles", functions)),
        _widget(
            "API responses",
            [
                ["AWS/ApiGateway", name, "ApiName", f"{APP_NAME}-${{Stage}}", "Stage", api_stage, {"label": name}]
                for name in ("Count", "4XXError", "5XXError")
            ],
        ),
    ]


def dashboard(functions: dict[str, str], alarms: list[str], api_stage: str) -> dict[str, Any]:
    """The AWS::CloudWatch::Dashboard resource; its body is one Fn::Sub over the JSON."""
    body = json.dumps({"widgets": widgets(functions, alarms, api_stage)}, separators=(",", ":"))
    return {
        "Type": "AWS::CloudWatch::Dashboard",
        "Properties": {"DashboardName": {"Fn::Sub": f"{APP_NAME}-${{Stage}}"}, "DashboardBody": {"Fn::Sub": body}},
    }
