"""The alarms that follow from the app and its state: per tier (dead letters, queue age, worker errors and
throttles, Fargate launch failures), per DynamoDB table (throttling), and rejected sandbox results. The others
are in infra/cfn/alarms.json; infra/DEPLOY.md says what each means and where to look."""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.metrics import NAMESPACE
from chalicelib.config import APP_NAME
from chalicelib.metric_names import (
    BACKEND_REJECTED,
    FARGATE_LAUNCH_FAILURES,
    SANDBOX_RESULT_REJECTED,
    TIER_DIMENSION,
    UNHANDLED_ERRORS,
)
from infra.state import queue_id, tier_id

POWERTOOLS_SERVICE = ("service", APP_NAME)  # Powertools adds POWERTOOLS_SERVICE_NAME to every app metric


def alarm(name: str, description: str, **properties: Any) -> dict[str, Any]:
    """An alarm named `code-runner-<stage>-<name>` that notifies the alarm topic when it fires and clears."""
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": {"Fn::Sub": f"{APP_NAME}-${{Stage}}-{name}"},
            "AlarmDescription": description,
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopic"}],
            "OKActions": [{"Ref": "AlarmTopic"}],
            **properties,
        },
    }


def metric(id_: str, namespace: str, name: str, dimensions: list[tuple[str, Any]], stat: str) -> dict[str, Any]:
    """One metric of a metric-math alarm, over five minutes."""
    return {
        "Id": id_,
        "ReturnData": False,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": key, "Value": value} for key, value in dimensions],
            },
            "Period": 300,
            "Stat": stat,
        },
    }


def _greater_than_zero(**properties: Any) -> dict[str, Any]:
    return {"Threshold": 0, "ComparisonOperator": "GreaterThanThreshold", **properties}


def tier_alarms(tier: str, worker_id: str) -> dict[str, Any]:
    """A tier's alarms: its DLQ got messages, its queue is not drained, its workers fail or are throttled, its
    Fargate sandboxes fail to launch."""
    tid = tier_id(tier)
    dlq = [("QueueName", {"Fn::GetAtt": [queue_id(tier, dead_letter=True), "QueueName"]})]
    worker = [("FunctionName", {"Ref": worker_id})]
    return {
        f"{tid}DeadLetterQueueAlarm": alarm(
            f"{tier}-dead-letters",
            f"Jobs of the {tier} tier reached the DLQ: the platform gave up on them and marked them 'error' "
            "(quota refunded). Its dead-letter function reads the queue at once, so received messages count too.",
            Metrics=[
                metric("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, "Maximum"),
                metric("received", "AWS/SQS", "NumberOfMessagesReceived", dlq, "Sum"),
                {"Id": "arrived", "Expression": "MAX([FILL(visible, 0), FILL(received, 0)])", "ReturnData": True},
            ],
            **_greater_than_zero(EvaluationPeriods=1),
        ),
        f"{tid}QueueAgeAlarm": alarm(
            f"{tier}-oldest-message",
            f"The oldest job in the {tier} queue has waited longer than OldestMessageAlarmSeconds: workers are "
            "stuck or throttled, or one key queued far more than its concurrency lets it run.",
            Namespace="AWS/SQS",
            MetricName="ApproximateAgeOfOldestMessage",
            Dimensions=[{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id(tier), "QueueName"]}}],
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=5,
            Threshold={"Ref": "OldestMessageAlarmSeconds"},
            ComparisonOperator="GreaterThanThreshold",
        ),
        f"{tid}WorkerErrorRateAlarm": alarm(
            f"{tier}-worker-errors",
            f"More than WorkerErrorRatePercent of the {tier} workers' invocations failed (crash or timeout), "
            "in 2 of the last 3 five-minute periods.",
            Metrics=[
                metric("errors", "AWS/Lambda", "Errors", worker, "Sum"),
                metric("invocations", "AWS/Lambda", "Invocations", worker, "Sum"),
                {"Id": "rate", "Expression": "IF(invocations > 0, 100 * errors / invocations, 0)", "ReturnData": True},
            ],
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold={"Ref": "WorkerErrorRatePercent"},
            ComparisonOperator="GreaterThanThreshold",
        ),
        f"{tid}WorkerThrottlesAlarm": alarm(
            f"{tier}-worker-throttles",
            f"Lambda throttled the {tier} workers: the account's concurrency is exhausted, so jobs wait.",
            Namespace="AWS/Lambda",
            MetricName="Throttles",
            Dimensions=[{"Name": "FunctionName", "Value": {"Ref": worker_id}}],
            Statistic="Sum",
            Period=300,
            **_greater_than_zero(EvaluationPeriods=1),
        ),
        f"{tid}FargateLaunchFailuresAlarm": alarm(
            f"{tier}-fargate-launch-failures",
            f"Fargate sandboxes for {tier} jobs failed to launch (RunTask refused, no capacity, image pull or "
            "network setup failed): those jobs are retried, then end in 'error'.",
            Namespace=NAMESPACE,
            MetricName=FARGATE_LAUNCH_FAILURES,
            Dimensions=[
                {"Name": POWERTOOLS_SERVICE[0], "Value": POWERTOOLS_SERVICE[1]},
                {"Name": TIER_DIMENSION, "Value": tier},
            ],
            Statistic="Sum",
            Period=300,
            **_greater_than_zero(EvaluationPeriods=1),
        ),
    }


def app_error_alarms() -> dict[str, Any]:
    """The API answered 500: AWS refused a request of ours as invalid, or an exception went unmapped. Either is a
    platform bug (a client value that should have been refused at the edge). The app emits these with varying
    dimensions, so each alarm sums its metric over all of them with a Metrics Insights query."""
    out = {}
    for logical_id, name, metric_name, what in (
        (
            "ApiBackendRejectedAlarm",
            "api-backend-rejected",
            BACKEND_REJECTED,
            "AWS refused a request of ours as invalid",
        ),
        (
            "ApiUnhandledErrorsAlarm",
            "api-unhandled-errors",
            UNHANDLED_ERRORS,
            "an exception nothing mapped to an answer",
        ),
    ):
        query = f'SELECT SUM({metric_name}) FROM "{NAMESPACE}"'
        out[logical_id] = alarm(
            name,
            f"The API answered 500 because {what}: a platform bug, never the client's. The log line with the "
            "request id the client got (details.request_id) has the traceback; fix it at its source.",
            Metrics=[{"Id": "total", "Expression": query, "Period": 300, "ReturnData": True}],
            **_greater_than_zero(EvaluationPeriods=1),
        )
    return out


def _throttle_metrics(table_id: str, indexes: list[str]) -> list[dict[str, Any]]:
    """Read and write throttle events of a table and of each of its GSIs: DynamoDB reports an index's events
    only under its own GlobalSecondaryIndexName dimension, and a throttled index write throttles the item write."""
    out = []
    for number, index in enumerate([None, *indexes]):
        dimensions: list[tuple[str, Any]] = [("TableName", {"Ref": table_id})]
        if index:
            dimensions.append(("GlobalSecondaryIndexName", index))
        for kind in ("Read", "Write"):
            out.append(metric(f"{kind.lower()}{number}", "AWS/DynamoDB", f"{kind}ThrottleEvents", dimensions, "Sum"))
    return out


def table_alarms(resources: dict[str, Any]) -> dict[str, Any]:
    """One throttling alarm per DynamoDB table of `resources`, its indexes included."""
    out = {}
    for table_id, spec in resources.items():
        if spec.get("Type") != "AWS::DynamoDB::Table":
            continue
        indexes = [g["IndexName"] for g in spec["Properties"].get("GlobalSecondaryIndexes", [])]
        metrics = _throttle_metrics(table_id, indexes)
        total = " + ".join(f"FILL({m['Id']}, 0)" for m in metrics)
        name = table_id.removesuffix("Table").lower()
        out[f"{table_id}ThrottlesAlarm"] = alarm(
            f"{name}-table-throttles",
            f"DynamoDB throttled reads or writes on the {name} table or its indexes: on-demand tables throttle "
            "above their per-partition or account limits, or when traffic doubles faster than they scale. "
            "Throttled calls surface as retried jobs or 503s.",
            Metrics=[*metrics, {"Id": "throttled", "Expression": total, "ReturnData": True}],
            **_greater_than_zero(EvaluationPeriods=1),
        )
    return out


def integrity_alarms(sandboxes: tuple[str, ...] = ("lambda", "fargate")) -> dict[str, Any]:
    """One alarm on any sandbox answer whose MAC did not hold (chalicelib/sandbox/integrity.py): a job forged
    its result through a hole in a sandbox, or answers are corrupted. Either is worth a look at once."""
    metrics = [
        metric(sandbox, NAMESPACE, SANDBOX_RESULT_REJECTED, [POWERTOOLS_SERVICE, ("sandbox", sandbox)], "Sum")
        for sandbox in sandboxes
    ]
    total = " + ".join(f"FILL({m['Id']}, 0)" for m in metrics)
    return {
        "SandboxResultRejectedAlarm": alarm(
            "sandbox-result-rejected",
            "A Lambda or Fargate sandbox answered with a result that does not carry the run's MAC: a job may have "
            "escaped its sandbox and forged its result (posted to the Runtime API, uploaded to the result URL). "
            "The job ended in 'error' without running again. Run `make verify-cloud` and read the sandbox logs.",
            Metrics=[*metrics, {"Id": "rejected", "Expression": total, "ReturnData": True}],
            **_greater_than_zero(EvaluationPeriods=1),
        )
    }
