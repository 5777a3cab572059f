"""Sanity checks of a merged template, run by infra/package.sh and the tests: what CloudFormation would only
reject halfway through a deploy (or accept and then misbehave) is caught at package time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

PSEUDO_PARAMETERS = {
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
}
INTRINSICS = re.compile(r"^(Ref|Fn::\w+)$")  # not "Condition": IAM statements have a key of that name
SUB_NAME = re.compile(r"\$\{([^!}][^}]*)\}")
NO_VALUE = {"Ref": "AWS::NoValue"}
EVENT_SOURCE_VISIBILITY_FACTOR = 6  # AWS: a queue feeding a Lambda function hides a message 6x its timeout
# Resources that hold data: kept when the stack is deleted or the resource replaced. cfn-lint's list of stateful
# types (I3011) also has queues and log groups; those must say what happens to them, whichever it is.
RETAINED_TYPES = ("AWS::DynamoDB::Table", "AWS::S3::Bucket")
EXPLICIT_POLICY_TYPES = ("AWS::SQS::Queue", "AWS::Logs::LogGroup")
MAX_ALARM_METRICS = 10  # CloudWatch's hard limit for one metric-math alarm


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (path, node) of a JSON document, depth first."""
    yield path, value
    if isinstance(value, dict):
        for key, child in value.items():
            yield from walk(child, f"{path}/{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from walk(child, f"{path}/{index}")


def _sub_names(value: Any) -> list[str]:
    text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])
    return [name for name in SUB_NAME.findall(text) if name not in variables]


def _referenced(node: dict[str, Any]) -> list[str]:
    """Names a node refers to: a parameter, pseudo parameter or resource ("Res.Attr" keeps only "Res")."""
    if "Ref" in node and isinstance(node["Ref"], str):
        return [node["Ref"].split(".")[0]]
    if "Fn::GetAtt" in node:
        target = node["Fn::GetAtt"]
        return [target[0] if isinstance(target, list) else target.split(".")[0]]
    if "Fn::Sub" in node:
        return [name if name.startswith("AWS::") else name.split(".")[0] for name in _sub_names(node["Fn::Sub"])]
    return []


def dangling_references(template: dict[str, Any]) -> list[str]:
    """Ref, Fn::GetAtt, Fn::Sub and DependsOn that name nothing in the template."""
    known = set(template.get("Parameters", {})) | set(template.get("Resources", {})) | PSEUDO_PARAMETERS
    conditions = set(template.get("Conditions", {}))
    out = []
    for path, node in walk(template):
        if isinstance(node, dict):
            out += [f"{path}: {name!r} is not defined" for name in _referenced(node) if name not in known]
            if "Fn::If" in node and node["Fn::If"][0] not in conditions:
                out.append(f"{path}: condition {node['Fn::If'][0]!r} is not defined")
    for logical_id, spec in template.get("Resources", {}).items():
        depends = spec.get("DependsOn", [])
        for name in [depends] if isinstance(depends, str) else depends:
            if name not in known:
                out.append(f"/Resources/{logical_id}/DependsOn: {name!r} is not defined")
        if "Condition" in spec and spec["Condition"] not in conditions:
            out.append(f"/Resources/{logical_id}/Condition: {spec['Condition']!r} is not defined")
    return out


def mixed_intrinsics(template: dict[str, Any]) -> list[str]:
    """Objects holding an intrinsic function next to other keys: what a deep merge of two intrinsics makes."""
    out = []
    for path, node in walk(template):
        if isinstance(node, dict) and len(node) > 1 and any(INTRINSICS.match(k) for k in node):
            out.append(f"{path}: an intrinsic function mixed with other keys: {sorted(node)}")
    return out


def typeless_resources(template: dict[str, Any]) -> list[str]:
    """Resources without a Type: a patch to a Chalice resource that Chalice no longer generates."""
    return [
        f"/Resources/{lid}: no Type (does the app still define it?)"
        for lid, spec in _resources(template)
        if "Type" not in spec
    ]


def _resources(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(template.get("Resources", {}).items())


def _default(template: dict[str, Any], value: Any) -> Any:
    """A literal, or the default of the parameter it refers to."""
    if isinstance(value, dict) and "Ref" in value:
        return template["Parameters"][value["Ref"]].get("Default")
    return value


def sqs_event_sources(template: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(function logical id, event id, event properties) of every SQS event source in a SAM template."""
    for function_id, spec in _resources(template):
        if spec.get("Type") == "AWS::Serverless::Function":
            for event_id, event in spec["Properties"].get("Events", {}).items():
                if event.get("Type") == "SQS":
                    yield function_id, event_id, event["Properties"]


def event_queue(properties: dict[str, Any]) -> str | None:
    """Logical id of the queue an SQS event source reads, when it names one of the template's queues."""
    queue = properties.get("Queue")
    if isinstance(queue, dict) and "Fn::GetAtt" in queue:
        return str(queue["Fn::GetAtt"][0])
    match = re.fullmatch(r"\$\{(\w+)\.Arn\}", queue.get("Fn::Sub", "")) if isinstance(queue, dict) else None
    return match.group(1) if match else None


def sqs_event_problems(template: dict[str, Any]) -> list[str]:
    """Every SQS event source reports partial batch failures, reads a queue of this template that hides a
    message for 6x the function's timeout (AWS's recommendation; below 1x Lambda refuses the mapping), and
    takes no batching window from a FIFO queue (which AWS does not support)."""
    out = []
    resources = template.get("Resources", {})
    for function_id, event_id, properties in sqs_event_sources(template):
        where = f"/Resources/{function_id}/Properties/Events/{event_id}"
        if "ReportBatchItemFailures" not in properties.get("FunctionResponseTypes", []):
            out.append(f"{where}: FunctionResponseTypes lacks ReportBatchItemFailures")
        queue_id = event_queue(properties)
        if queue_id not in resources:
            out.append(f"{where}: the queue is not one of the template's queues")
            continue
        queue = resources[queue_id]["Properties"]
        visibility = _default(template, queue.get("VisibilityTimeout", 30))
        timeout = resources[function_id]["Properties"].get("Timeout", 3)
        if int(visibility) < EVENT_SOURCE_VISIBILITY_FACTOR * int(timeout):
            out.append(
                f"{where}: {queue_id} VisibilityTimeout {visibility} s < {EVENT_SOURCE_VISIBILITY_FACTOR} x the "
                f"function's timeout {timeout} s"
            )
        if queue.get("FifoQueue") and properties.get("MaximumBatchingWindowInSeconds", NO_VALUE) != NO_VALUE:
            out.append(f"{where}: MaximumBatchingWindowInSeconds on a FIFO queue (set it to AWS::NoValue)")
    return out


def stateful_problems(template: dict[str, Any]) -> list[str]:
    """Tables and buckets survive a stack deletion or replacement (tables also refuse a DeleteTable); queues and
    log groups say explicitly what happens to them."""
    out = []
    for logical_id, spec in _resources(template):
        type_ = spec.get("Type")
        if type_ in RETAINED_TYPES:
            for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
                if spec.get(policy) != "Retain":
                    out.append(f"/Resources/{logical_id}: {type_} without {policy}: Retain")
        if type_ == "AWS::DynamoDB::Table" and spec["Properties"].get("DeletionProtectionEnabled") is not True:
            out.append(f"/Resources/{logical_id}: DeletionProtectionEnabled is not true")
        if type_ in EXPLICIT_POLICY_TYPES and not {"DeletionPolicy", "UpdateReplacePolicy"} <= set(spec):
            out.append(f"/Resources/{logical_id}: {type_} without an explicit DeletionPolicy and UpdateReplacePolicy")
    return out


def alarm_problems(template: dict[str, Any]) -> list[str]:
    """Metric-math alarms within CloudWatch's limit of metrics."""
    out = []
    for logical_id, spec in _resources(template):
        if spec.get("Type") == "AWS::CloudWatch::Alarm":
            count = sum("MetricStat" in m for m in spec["Properties"].get("Metrics", []))
            if count > MAX_ALARM_METRICS:
                out.append(f"/Resources/{logical_id}: {count} metrics, CloudWatch takes {MAX_ALARM_METRICS}")
    return out


def iam_resource_problems(template: dict[str, Any]) -> list[str]:
    """IAM statements whose Resource is a plain string that is neither "*" nor an ARN: a placeholder that no
    patch replaced (e.g. the tier queues of .chalice/policy-worker.json)."""
    out = []
    for path, node in walk(template):
        if isinstance(node, dict) and "Effect" in node and "Resource" in node:
            for resource in node["Resource"] if isinstance(node["Resource"], list) else [node["Resource"]]:
                if isinstance(resource, str) and resource != "*" and not resource.startswith("arn:"):
                    out.append(f"{path}/Resource: {resource!r} is not an ARN")
    return out


def problems(template: dict[str, Any]) -> list[str]:
    """Everything wrong with a merged template that these checks know of; empty when it looks deployable."""
    return [
        *typeless_resources(template),
        *dangling_references(template),
        *mixed_intrinsics(template),
        *sqs_event_problems(template),
        *stateful_problems(template),
        *alarm_problems(template),
        *iam_resource_problems(template),
    ]


def _missing_image_handler(function_id: str, properties: dict[str, Any]) -> list[str]:
    """An image function's handler is its Command, a module path of the image's code (chalicelib)."""
    import importlib

    handler = (properties.get("ImageConfig") or {}).get("Command", [""])[0]
    module_name, _, attribute = handler.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), attribute, None) if module_name else None
    except ImportError:
        found = None
    return [] if callable(found) else [f"/Resources/{function_id}: image handler {handler!r} is not a callable"]


def missing_handlers(template: dict[str, Any], module: Any) -> list[str]:
    """Functions whose Handler ("app.name") is not a callable of the app module: Lambda could not start them."""
    out = []
    for function_id, spec in _resources(template):
        if spec.get("Type") == "AWS::Serverless::Function" and spec["Properties"].get("PackageType") == "Image":
            out += _missing_image_handler(function_id, spec["Properties"])
        elif spec.get("Type") == "AWS::Serverless::Function":
            handler = spec["Properties"]["Handler"]
            attribute = handler.split(".", 1)[1]
            if not callable(getattr(module, attribute, None)):
                out.append(f"/Resources/{function_id}: handler {handler!r} is not defined in {module.__name__}.py")
    return out
