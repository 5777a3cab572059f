"""Create the platform's queues and tables on a (moto) endpoint from the definitions the template deploys
(infra/state.py: infra/resources.json and one queue and DLQ per tier): one source of truth."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from chalicelib.adapters.aws import client as aws_client
from infra.state import state_template

CHALICE_STAGE = "dev"  # whose function timeouts give the parameters' defaults (.chalice/config.json)


def _resolve(value: Any, params: dict[str, Any], arns: dict[str, str]) -> Any:
    """Resolve the few intrinsic functions the template uses: Ref (parameters), Fn::Sub, Fn::GetAtt Arn."""
    if isinstance(value, dict):
        if "Ref" in value:
            return params[value["Ref"]]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            for name, val in params.items():
                text = text.replace("${" + name + "}", str(val))
            return text
        if "Fn::GetAtt" in value:
            return arns[value["Fn::GetAtt"][0]]
        return {k: _resolve(v, params, arns) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, params, arns) for v in value]
    return value


def _create_queue(props: dict[str, Any]) -> str:
    sqs = aws_client("sqs")
    attrs = {"FifoQueue": "true"} if props.get("FifoQueue") else {}
    for name in ("VisibilityTimeout", "MessageRetentionPeriod", "DeduplicationScope", "FifoThroughputLimit"):
        if name in props:
            attrs[name] = str(props[name])
    if "RedrivePolicy" in props:
        attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    url = sqs.create_queue(QueueName=props["QueueName"], Attributes=attrs)["QueueUrl"]
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _create_table(props: dict[str, Any]) -> None:
    ddb = aws_client("dynamodb")
    kwargs = {k: props[k] for k in ("TableName", "AttributeDefinitions", "KeySchema", "BillingMode")}
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    try:
        ddb.create_table(**kwargs)
    except ddb.exceptions.ResourceInUseException:
        return
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(TableName=props["TableName"], TimeToLiveSpecification=ttl)


def create_resources(
    stage: str = "dev", overrides: dict[str, Any] | None = None, tiers: Sequence[str] | None = None
) -> dict[str, str]:
    """Create every queue and table of the state template for `stage` (and `tiers`, default TIER_NAMES);
    returns logical id -> physical name. `overrides` sets template parameters (e.g. VisibilityTimeout)."""
    template = state_template(CHALICE_STAGE, tiers)
    params = {name: spec.get("Default") for name, spec in template["Parameters"].items()}
    params.update({"Stage": stage, **(overrides or {})})
    arns: dict[str, str] = {}
    created: dict[str, str] = {}
    resources = template["Resources"]
    # Dead-letter queues first: the tier queues' redrive policies point at them.
    order = sorted(resources, key=lambda lid: "RedrivePolicy" in resources[lid].get("Properties", {}))
    for logical_id in order:
        spec = resources[logical_id]
        props = _resolve(spec["Properties"], params, arns)
        if spec["Type"] == "AWS::SQS::Queue":
            arns[logical_id] = _create_queue(props)
            created[logical_id] = props["QueueName"]
        elif spec["Type"] == "AWS::DynamoDB::Table":
            _create_table(props)
            created[logical_id] = props["TableName"]
    return created
