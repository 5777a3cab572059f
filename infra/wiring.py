"""The part of the merge template that follows from the app itself: one patch per function Chalice generates
(name, log group, environment, SQS event source), the tier queues in the functions' SQS permissions, and the
generated alarms (infra/alarms.py). Every tier of `chalicelib.deployment.TIER_NAMES` must have its worker and
dead-letter function in app.py, listening to its queues: a tier without them stops the build with a message.
The hand-written parts live in infra/resources.json and infra/cfn/*.json."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from chalicelib.config import APP_NAME, Settings, settings_from_env
from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES
from chalicelib.tier_resources import tier_resources
from infra import alarms
from infra.chalice_template import ChaliceTemplate
from infra.state import queue_id

# app.py's `sandbox_<mb>` functions, one per memory class: logical id -> memory (MB).
SANDBOX_FUNCTIONS = {f"Sandbox{size}": size for size in SANDBOX_MEMORY_CLASSES}
SANDBOX_FUNCTION_PREFIX = f"{APP_NAME}-${{Stage}}-sandbox"  # + "_<mb>": what the Lambda adapter invokes
# The statement of .chalice/policy-worker.json whose Resource this module fills with every tier's queues.
TIER_QUEUES_SID = "TierQueuesAndDeadLetterQueues"
# The rest of the WebSocket API's URLs after its id (a Sub of the region and URL suffix inside every function's
# environment makes cfn-lint expand them over every region: minutes instead of seconds).
WS_HOST_AND_STAGE = {"Fn::Sub": ".execute-api.${AWS::Region}.${AWS::URLSuffix}/api"}

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
    # The WebSocket API Chalice generates (app.py's on_ws_* handlers); its stage is api_gateway_stage of
    # .chalice/config.json (the HTTP API of infra/cfn/api.json has its own `$default` stage). The stage
    # resource itself cannot be referenced here: it depends on the routes, which depend on these functions.
    "CODERUNNER_WS_URL": {"Fn::Join": ["", ["wss://", {"Ref": "WebsocketAPI"}, WS_HOST_AND_STAGE]]},
    "CODERUNNER_WS_MANAGEMENT_URL": {"Fn::Join": ["", ["https://", {"Ref": "WebsocketAPI"}, WS_HOST_AND_STAGE]]},
}


# Every function logs JSON, and Lambda's own START, END and REPORT lines (INFO) are dropped: three lines per
# invocation that CloudWatch Logs would bill by the byte (the REPORT figures are in Lambda's metrics anyway).
FUNCTION_LOGGING = {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "WARN"}


class WiringError(ValueError):
    """The app and the template disagree (a tier without its functions, a function reading an unknown queue)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def function_name(name: str) -> dict[str, str]:
    """The physical name of the app's function `name`: fixed, so policies and log groups can name it."""
    return {"Fn::Sub": f"{APP_NAME}-${{Stage}}-{name}"}


def queue_ids_by_name(state: dict[str, Any], stage: str) -> dict[str, str]:
    """Physical queue name for `stage` -> logical id, for every queue of the state template (infra/state.py)."""
    out = {}
    for logical_id, spec in state["Resources"].items():
        if spec["Type"] == "AWS::SQS::Queue":
            out[spec["Properties"]["QueueName"]["Fn::Sub"].replace("${Stage}", stage)] = logical_id
    return out


def _sqs_events(chalice: ChaliceTemplate, function_id: str) -> dict[str, str]:
    """Event id -> physical name of the queue it reads, for every SQS event source of one function."""
    events = chalice.template["Resources"][function_id]["Properties"].get("Events", {})
    return {
        event_id: re.sub(r".*:", "", event["Properties"]["Queue"]["Fn::Sub"])
        for event_id, event in events.items()
        if event["Type"] == "SQS"
    }


def _sqs_event_patch(queue_name: str, queue_logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        # Same key as Chalice's value: the merge replaces it instead of mixing two intrinsics. Naming the
        # template's own queue also makes CloudFormation create it before the event source mapping.
        "Queue": {"Fn::Sub": f"${{{queue_logical_id}.Arn}}"},
        # Chalice 1.34 cannot ask for it; the handlers return `batchItemFailures`.
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    }
    if queue_name.endswith(".fifo"):
        # Chalice writes 0; AWS documents that FIFO event sources take no batching window at all.
        properties["MaximumBatchingWindowInSeconds"] = {"Ref": "AWS::NoValue"}
    return {"Properties": properties}


def function_patches(chalice: ChaliceTemplate, queues: dict[str, str]) -> dict[str, Any]:
    """Merge-template resources that complete every function Chalice generated, and its log group."""
    out: dict[str, Any] = {}
    problems = []
    for function_id, name in chalice.function_names.items():
        properties: dict[str, Any] = {"FunctionName": function_name(name), "LoggingConfig": dict(FUNCTION_LOGGING)}
        if function_id not in SANDBOX_FUNCTIONS:
            properties["Environment"] = {"Variables": dict(PLATFORM_ENVIRONMENT)}
        events = {}
        for event_id, queue_name in _sqs_events(chalice, function_id).items():
            if queue_name not in queues:
                problems.append(
                    f"app.py `{name}` listens to {queue_name}, which is no tier's queue or DLQ "
                    "(is its tier in chalicelib/deployment.py TIER_NAMES?)"
                )
                continue
            events[event_id] = _sqs_event_patch(queue_name, queues[queue_name])
        if events:
            properties["Events"] = events
        out[function_id] = {"Properties": properties}
        out[f"{function_id}LogGroup"] = {
            "Type": "AWS::Logs::LogGroup",
            # Logs expire with their retention; kept past a teardown they would only block the next deploy's
            # fixed names. Export them (subscription) if they must outlive the stack.
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": f"/aws/lambda/{APP_NAME}-${{Stage}}-{name}"},
                "RetentionInDays": {"Ref": "LogRetentionDays"},
            },
        }
    if problems:
        raise WiringError(problems)
    return out


def listeners(chalice: ChaliceTemplate, queues: dict[str, str]) -> dict[str, str]:
    """Queue logical id -> logical id of the function its event source mapping invokes."""
    return {
        queues[queue_name]: function_id
        for function_id in chalice.function_names
        for queue_name in _sqs_events(chalice, function_id).values()
        if queue_name in queues
    }


def tier_problems(chalice: ChaliceTemplate, tiers: Sequence[str], stage: str) -> list[str]:
    """What app.py lacks for each tier: its worker and dead-letter functions, each reading the tier's queue."""
    ids_by_name = {name: function_id for function_id, name in chalice.function_names.items()}
    out = []
    for tier in tiers:
        needs = tier_resources(tier)
        for function, dead_letter in ((needs.worker_function, False), (needs.dead_letter_function, True)):
            queue = needs.queue(stage, dead_letter)
            if function not in ids_by_name:
                out.append(
                    f"tier {tier!r} (chalicelib/deployment.py TIER_NAMES) has no function {function!r}: app.py must "
                    f"declare it with @app.on_sqs_message(queue=<{queue}>, name={function!r})"
                )
            elif queue not in _sqs_events(chalice, ids_by_name[function]).values():
                out.append(
                    f"app.py `{function}` must listen to {queue}, its tier's {'DLQ' if dead_letter else 'queue'}"
                )
    return out


def queue_policy_patches(chalice: ChaliceTemplate, tiers: Sequence[str]) -> dict[str, Any]:
    """Fill the tier-queue statement of every role Chalice generated from .chalice/policy-worker.json with the
    ARNs of every tier's queue and DLQ (the merge replaces lists whole, so the patch carries the policies)."""
    arns = [{"Fn::GetAtt": [queue_id(tier, dead), "Arn"]} for tier in tiers for dead in (False, True)]
    out = {}
    for logical_id, spec in chalice.template["Resources"].items():
        if spec["Type"] != "AWS::IAM::Role":
            continue
        policies = copy.deepcopy(spec["Properties"].get("Policies", []))
        found = [s for p in policies for s in p["PolicyDocument"]["Statement"] if s.get("Sid") == TIER_QUEUES_SID]
        for statement in found:
            statement["Resource"] = arns
        if found:
            out[logical_id] = {"Properties": {"Policies": policies}}
    return out


SANDBOX_ROLE_DESCRIPTION = (
    "Lambda sandbox (user code runs with these credentials, and may read them): only what Lambda needs to attach "
    "the function to the sandbox VPC (ENI actions scoped by ec2:Vpc/ec2:Subnet and resource ARNs to its subnets and "
    "security group; the two Describe calls cannot be scoped and only read) and to write its own log streams. Code "
    "running inside the function is denied the network actions (lambda:SourceFunctionArn); outside it, stolen "
    "credentials can at most manage interfaces in a VPC with no route out. See infra/DEPLOY.md."
)


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
        param, condition = sandbox_reservation_id(size), f"Reserve{function_id}Concurrency"
        needed = settings.sandbox_concurrency(size)
        parameters[param] = {
            "Type": "Number",
            "Default": 0,
            "MinValue": 0,
            "Description": f"Concurrent executions reserved for the {size} MB sandbox; 0 reserves none (it then "
            f"shares the account's unreserved pool). {needed} (every worker of the tiers whose jobs may need this "
            "class) means it can never throttle a worker. Lambda keeps 100 of the account's quota unreserved and "
            "new accounts start with a low quota: reserve once the quota allows it (infra/DEPLOY.md).",
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
        resources[f"{function_id}Role"] = {"Properties": {"Description": SANDBOX_ROLE_DESCRIPTION}}
        resources.update(_sandbox_alarms(function_id, size, param, needed))
    return {"Parameters": parameters, "Conditions": conditions, "Resources": resources}


def _sandbox_alarms(function_id: str, size: int, param: str, needed: int) -> dict[str, Any]:
    dimensions = [{"Name": "FunctionName", "Value": {"Ref": function_id}}]
    return {
        f"{function_id}ThrottlesAlarm": alarms.alarm(
            f"sandbox-{size}-throttles",
            f"Lambda throttled the {size} MB sandbox: it reached {param} or, with no reservation, the account's "
            f"concurrency ran out. Jobs wait (a throttle is never an attempt); reserve at least {needed} or raise "
            "the account's quota.",
            Namespace="AWS/Lambda",
            MetricName="Throttles",
            Dimensions=dimensions,
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        ),
        f"{function_id}ErrorsAlarm": alarms.alarm(
            f"sandbox-{size}-errors",
            f"The {size} MB sandbox itself failed (crash, timeout, out of memory of the supervisor) in 2 of the "
            "last 3 five-minute periods; user code failing is a result, not an error.",
            Namespace="AWS/Lambda",
            MetricName="Errors",
            Dimensions=dimensions,
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
        ),
    }


def generate(chalice: ChaliceTemplate, state: dict[str, Any], stage: str, tiers: Sequence[str]) -> dict[str, Any]:
    """The generated fragment: function patches, log groups, queue permissions, the generated alarms, and each
    sandbox function's placement, reservation and alarms. WiringError lists everything the app lacks for
    `tiers`."""
    problems = tier_problems(chalice, tiers, stage)
    if problems:
        raise WiringError(problems)
    queues = queue_ids_by_name(state, stage)
    workers = listeners(chalice, queues)
    out = function_patches(chalice, queues)
    out.update(queue_policy_patches(chalice, tiers))
    for tier in tiers:
        out.update(alarms.tier_alarms(tier, workers[queue_id(tier)]))
    out.update(alarms.table_alarms(state["Resources"]))
    out.update(alarms.app_error_alarms())
    sandboxes = sandbox_fragment(settings_from_env())
    for logical_id, patch in sandboxes["Resources"].items():
        out[logical_id] = _merged(out.get(logical_id, {}), patch)
    out.update(alarms.integrity_alarms())
    return {"Parameters": sandboxes["Parameters"], "Conditions": sandboxes["Conditions"], "Resources": out}


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merged(merged[key], value) if isinstance(merged.get(key), dict) else value
    return merged
