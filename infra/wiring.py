"""The part of the merge template that follows from the app itself: one patch per function Chalice generates
(name, log group, environment, SQS event source) and the alarms of each tier. The hand-written parts live in
infra/resources.json and infra/cfn/*.json."""

from __future__ import annotations

import re
from typing import Any

from chalicelib.config import APP_NAME, TIER_NAMES, Settings, settings_from_env
from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES
from infra.chalice_template import ChaliceTemplate

# app.py's `sandbox_<mb>` functions, one per memory class: logical id -> memory (MB).
SANDBOX_FUNCTIONS = {f"Sandbox{size}": size for size in SANDBOX_MEMORY_CLASSES}
SANDBOX_FUNCTION_PREFIX = f"{APP_NAME}-${{Stage}}-sandbox"  # + "_<mb>": what the Lambda adapter invokes

# What every function but the sandbox reads at start (chalicelib.config.settings_from_env). The sandbox gets
# none of it: user code runs there and has no business knowing the platform's resources.
PLATFORM_ENVIRONMENT: dict[str, Any] = {
    "CODERUNNER_STAGE": {"Ref": "Stage"},
    "CODERUNNER_SANDBOX_FUNCTION": {"Fn::Sub": SANDBOX_FUNCTION_PREFIX},
    "CODERUNNER_RESULTS_BUCKET": {"Ref": "ResultsBucket"},
    "CODERUNNER_FARGATE_CLUSTER": {"Ref": "SandboxCluster"},
    "CODERUNNER_FARGATE_TASK_DEFINITION": {"Ref": "SandboxTaskDefinition"},
    "CODERUNNER_FARGATE_SUBNETS": {"Fn::Join": [",", [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]]},
    "CODERUNNER_FARGATE_SECURITY_GROUPS": {"Ref": "FargateTaskSecurityGroup"},
    "CODERUNNER_ARTIFACTS_BUCKET": {"Ref": "ArtifactsBucket"},
}


# Every function logs JSON, and Lambda's own START, END and REPORT lines (INFO) are dropped: three lines per
# invocation that CloudWatch Logs would bill by the byte (the REPORT figures are in Lambda's metrics anyway).
FUNCTION_LOGGING = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}


def tier_id(tier: str) -> str:
    """The prefix of a tier's logical ids in infra/resources.json: "free" -> "Free"."""
    return tier.capitalize()


def queue_id(tier: str, dead_letter: bool = False) -> str:
    """Logical id of a tier's queue or DLQ in infra/resources.json."""
    return f"{tier_id(tier)}{'DeadLetterQueue' if dead_letter else 'Queue'}"


def function_name(name: str) -> dict[str, str]:
    """The physical name of the app's function `name`: fixed, so policies and log groups can name it."""
    return {"Fn::Sub": f"{APP_NAME}-${{Stage}}-{name}"}


def queue_ids_by_name(resources: dict[str, Any], stage: str) -> dict[str, str]:
    """Physical queue name for `stage` -> logical id, for every queue of infra/resources.json."""
    out = {}
    for logical_id, spec in resources["Resources"].items():
        if spec["Type"] == "AWS::SQS::Queue":
            out[spec["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", stage)] = logical_id
    return out


def _sqs_event_patches(function_id: str, function: dict[str, Any], queues: dict[str, str]) -> dict[str, Any]:
    patches = {}
    for event_id, event in function["Properties"].get("Events", {}).items():
        if event["Type"] != "SQS":
            continue
        # Chalice names the queue by ARN; the patch points at the template's own queue instead, which also
        # makes CloudFormation create the queue before the event source mapping.
        queue_name = re.sub(r".*:", "", event["Properties"]["Queue"]["Fn::Sub"])
        if queue_name not in queues:
            raise ValueError(f"{function_id} listens to {queue_name}, which infra/resources.json does not define")
        patches[event_id] = {
            "Properties": {
                # Same key as Chalice's value: the merge replaces it instead of mixing two intrinsics.
                "Queue": {"Fn::Sub": f"${{{queues[queue_name]}.Arn}}"},
                # Chalice 1.34 cannot ask for it; the handlers return `batchItemFailures`.
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            }
        }
    return patches


def function_patches(chalice: ChaliceTemplate, queues: dict[str, str]) -> dict[str, Any]:
    """Merge-template resources that complete every function Chalice generated, and its log group."""
    out: dict[str, Any] = {}
    for function_id, name in chalice.function_names.items():
        function = chalice.template["Resources"][function_id]
        properties: dict[str, Any] = {"FunctionName": function_name(name), "LoggingConfig": dict(FUNCTION_LOGGING)}
        if function_id not in SANDBOX_FUNCTIONS:
            properties["Environment"] = {"Variables": dict(PLATFORM_ENVIRONMENT)}
        events = _sqs_event_patches(function_id, function, queues)
        if events:
            properties["Events"] = events
        out[function_id] = {"Properties": properties}
        out[f"{function_id}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/{APP_NAME}-${{Stage}}-{name}"},
                "RetentionInDays": {"Ref": "LogRetentionDays"},
            },
        }
    return out


def listeners(chalice: ChaliceTemplate, queues: dict[str, str]) -> dict[str, str]:
    """Queue logical id -> logical id of the function its event source mapping invokes."""
    out = {}
    for function_id in chalice.function_names:
        events = chalice.template["Resources"][function_id]["Properties"].get("Events", {})
        for event in events.values():
            if event["Type"] == "SQS":
                out[queues[re.sub(r".*:", "", event["Properties"]["Queue"]["Fn::Sub"])]] = function_id
    return out


def _alarm(name: str, description: str, **properties: Any) -> dict[str, Any]:
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


def _metric(id_: str, namespace: str, metric: str, dimension: tuple[str, Any], stat: str) -> dict[str, Any]:
    return {
        "Id": id_,
        "ReturnData": False,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": dimension[0], "Value": dimension[1]}],
            },
            "Period": 300,
            "Stat": stat,
        },
    }


def tier_alarms(tier: str, worker_id: str) -> dict[str, Any]:
    """A tier's alarms: its DLQ got messages, its queue is not drained, its workers fail or are throttled."""
    tid, dlq = tier_id(tier), ("QueueName", {"Fn::GetAtt": [queue_id(tier, dead_letter=True), "QueueName"]})
    worker = ("FunctionName", {"Ref": worker_id})
    return {
        f"{tid}DeadLetterQueueAlarm": _alarm(
            f"{tier}-dead-letters",
            f"Jobs of the {tier} tier reached the DLQ: the platform gave up on them and marked them 'error' "
            "(quota refunded). Its dead-letter function reads the queue at once, so received messages count too.",
            Metrics=[
                _metric("visible", "AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq, "Maximum"),
                _metric("received", "AWS/SQS", "NumberOfMessagesReceived", dlq, "Sum"),
                {"Id": "arrived", "Expression": "MAX([FILL(visible, 0), FILL(received, 0)])", "ReturnData": True},
            ],
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        ),
        f"{tid}QueueAgeAlarm": _alarm(
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
        f"{tid}WorkerErrorRateAlarm": _alarm(
            f"{tier}-worker-errors",
            f"More than WorkerErrorRatePercent of the {tier} workers' invocations failed (crash or timeout), "
            "in 2 of the last 3 five-minute periods.",
            Metrics=[
                _metric("errors", "AWS/Lambda", "Errors", worker, "Sum"),
                _metric("invocations", "AWS/Lambda", "Invocations", worker, "Sum"),
                {"Id": "rate", "Expression": "IF(invocations > 0, 100 * errors / invocations, 0)", "ReturnData": True},
            ],
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold={"Ref": "WorkerErrorRatePercent"},
            ComparisonOperator="GreaterThanThreshold",
        ),
        f"{tid}WorkerThrottlesAlarm": _alarm(
            f"{tier}-worker-throttles",
            f"Lambda throttled the {tier} workers: the account's concurrency is exhausted, so jobs wait.",
            Namespace="AWS/Lambda",
            MetricName="Throttles",
            Dimensions=[{"Name": "FunctionName", "Value": {"Ref": worker_id}}],
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        ),
    }


def sandbox_reservation_id(size: int) -> str:
    return f"Sandbox{size}ReservedConcurrency"


def sandbox_fragment(settings: Settings) -> dict[str, Any]:
    """Each sandbox function's VPC placement, reserved concurrency (a parameter) and alarms.

    The concurrency a class must have so that it never throttles a worker follows from the tiers' capacities
    (chalicelib/config.py `Settings.sandbox_concurrency`); reserving it needs that much of the account's quota
    beyond the 100 Lambda keeps unreserved, which a new account does not have, so the default reserves none and
    says how much to reserve. A throttle is never a failed attempt (the job backs off), only a delay."""
    parameters, conditions, resources = {}, {}, {}
    for function_id, size in SANDBOX_FUNCTIONS.items():
        param, condition, needed = (
            sandbox_reservation_id(size),
            f"Reserve{function_id}",
            settings.sandbox_concurrency(size),
        )
        parameters[param] = {
            "Type": "Number",
            "Default": 0,
            "MinValue": 0,
            "Description": f"Concurrent executions reserved for the {size} MB sandbox; 0 reserves none. {needed} "
            "(every worker of the tiers whose jobs may need this class) means it can never throttle a worker; "
            "reserve it once the account's Lambda quota allows (infra/DEPLOY.md).",
        }
        conditions[condition] = {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, 0]}]}
        resources[function_id] = {
            "Properties": {
                "VpcConfig": {
                    "SubnetIds": [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}],
                    "SecurityGroupIds": [{"Ref": "SandboxFunctionSecurityGroup"}],
                },
                "ReservedConcurrentExecutions": {"Fn::If": [condition, {"Ref": param}, {"Ref": "AWS::NoValue"}]},
            }
        }
        function = ("FunctionName", {"Ref": function_id})
        resources[f"{function_id}ThrottlesAlarm"] = _alarm(
            f"sandbox-{size}-throttles",
            f"Lambda throttled the {size} MB sandbox: jobs wait (a throttle is never an attempt). Reserve "
            f"{param} (at least {needed}) or raise the account's concurrency quota.",
            Namespace="AWS/Lambda",
            MetricName="Throttles",
            Dimensions=[{"Name": function[0], "Value": function[1]}],
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        )
        resources[f"{function_id}ErrorsAlarm"] = _alarm(
            f"sandbox-{size}-errors",
            f"The {size} MB sandbox itself failed (crash, timeout, out of memory of the supervisor) in 2 of the "
            "last 3 five-minute periods; user code failing is a result, not an error.",
            Namespace="AWS/Lambda",
            MetricName="Errors",
            Dimensions=[{"Name": function[0], "Value": function[1]}],
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        )
    return {"Parameters": parameters, "Conditions": conditions, "Resources": resources}


def generate(chalice: ChaliceTemplate, resources: dict[str, Any], stage: str) -> dict[str, Any]:
    """The generated fragment: function patches, log groups, every tier's alarms and the sandbox functions'."""
    queues = queue_ids_by_name(resources, stage)
    workers = listeners(chalice, queues)
    out = function_patches(chalice, queues)
    for tier in TIER_NAMES:
        if queue_id(tier) not in workers:
            raise ValueError(f"no function listens to the {tier} queue ({queue_id(tier)})")
        out.update(tier_alarms(tier, workers[queue_id(tier)]))
    sandboxes = sandbox_fragment(settings_from_env())
    for function_id, patch in sandboxes["Resources"].items():
        out[function_id] = _merge_patch(out.get(function_id, {}), patch)
    return {"Parameters": sandboxes["Parameters"], "Conditions": sandboxes["Conditions"], "Resources": out}


def _merge_patch(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge_patch(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged
