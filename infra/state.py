"""The platform's state resources, defined once: the DynamoDB tables of infra/resources.json and, for every tier of
`chalicelib.deployment.TIER_NAMES`, a FIFO queue and its dead-letter queue. `make package` merges them into the
template (infra/build_template.py) and the local stack creates them on moto (devtools/resources.py).

The queues' visibility timeouts follow from the functions that read them: AWS recommends 6x the function's
timeout for a Lambda event source (a message a throttled or retried invocation still holds must not reappear),
and the timeouts are those of .chalice/config.json, read the way Chalice reads them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chalicelib.config import RECEIVE_SLACK, TIER_NAMES, settings_from_env
from chalicelib.tier_resources import tier_resources

INFRA = Path(__file__).resolve().parent
RESOURCES = INFRA / "resources.json"
CHALICE_CONFIG = INFRA.parent / ".chalice" / "config.json"
EVENT_SOURCE_VISIBILITY_FACTOR = 6  # AWS's recommendation for SQS queues that feed a Lambda function
SETTINGS = settings_from_env()  # max_attempts (CODERUNNER_MAX_ATTEMPTS at package time) sets MaxReceiveCount


def tier_id(tier: str) -> str:
    """The prefix of a tier's logical ids: "free" -> "Free" (Chalice names `worker_free` "WorkerFree")."""
    return tier_resources(tier).tier.capitalize()


def queue_id(tier: str, dead_letter: bool = False) -> str:
    """Logical id of a tier's queue or DLQ."""
    return f"{tier_id(tier)}{'DeadLetterQueue' if dead_letter else 'Queue'}"


def function_timeout(function: str, stage: str, config_path: Path = CHALICE_CONFIG) -> int:
    """`lambda_timeout` of app function `function` in Chalice stage `stage`, resolved as `chalice package` does
    (stage's function, stage, top-level function, top level, Chalice's default)."""
    from chalice.config import Config
    from chalice.constants import DEFAULT_LAMBDA_TIMEOUT

    config = Config(chalice_stage=stage, function_name=function, config_from_disk=json.loads(config_path.read_text()))
    return int(config.lambda_timeout or DEFAULT_LAMBDA_TIMEOUT)


def _parameters(stage: str, tiers: Sequence[str]) -> dict[str, Any]:
    workers = max(function_timeout(tier_resources(t).worker_function, stage) for t in tiers)
    dead_letters = max(function_timeout(tier_resources(t).dead_letter_function, stage) for t in tiers)
    factor = EVENT_SOURCE_VISIBILITY_FACTOR
    return {
        "VisibilityTimeout": {
            "Type": "Number",
            "Default": factor * workers,
            "MinValue": workers,
            "Description": f"Tier queues: {factor}x the workers' timeout ({workers} s in .chalice/config.json), as AWS "
            "recommends for a Lambda event source; Lambda refuses a mapping below the timeout.",
        },
        "DeadLetterVisibilityTimeout": {
            "Type": "Number",
            "Default": factor * dead_letters,
            "MinValue": dead_letters,
            "Description": f"Dead-letter queues: {factor}x the dead-letter functions' timeout ({dead_letters} s).",
        },
        "MaxReceiveCount": {
            "Type": "Number",
            "Default": SETTINGS.max_receive_count,
            "MinValue": 1,
            "Description": f"Receives before SQS moves a job's message to its tier's DLQ (whose consumer ends the job "
            f"error, refunded): the job's max_attempts ({SETTINGS.max_attempts}) plus {RECEIVE_SLACK} "
            "(chalicelib/config.py RECEIVE_SLACK: a duplicate delivery, a worker lost before it started the job). "
            "Nothing else spends receives: a job waiting for its owner's slot is parked and its message deleted "
            "(chalicelib/services/parking.py), and a throttled sandbox renews the message before it runs out. A "
            "message received more often is a poison message.",
        },
    }


def _queue(name: str, visibility: str, retention_s: int, **properties: Any) -> dict[str, Any]:
    return {
        "Type": "AWS::SQS::Queue",
        # Explicit: a queue holds jobs in flight only; the jobs table keeps every job's record.
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {
            "QueueName": {"Fn::Sub": name},
            "FifoQueue": True,
            "ContentBasedDeduplication": False,  # every send names its deduplication id
            **properties,
            "VisibilityTimeout": {"Ref": visibility},
            "MessageRetentionPeriod": retention_s,
        },
    }


def tier_queues(tier: str) -> dict[str, Any]:
    """A tier's FIFO queue (message groups per key slot, so deduplication and throughput are per group) and the
    DLQ it redrives to."""
    needs = tier_resources(tier)
    return {
        queue_id(tier, dead_letter=True): _queue(
            needs.queue("${Stage}", dead_letter=True), "DeadLetterVisibilityTimeout", 14 * 24 * 3600
        ),
        queue_id(tier): _queue(
            needs.queue("${Stage}"),
            "VisibilityTimeout",
            4 * 24 * 3600,
            DeduplicationScope="messageGroup",
            FifoThroughputLimit="perMessageGroupId",
            RedrivePolicy={
                "deadLetterTargetArn": {"Fn::GetAtt": [queue_id(tier, dead_letter=True), "Arn"]},
                "maxReceiveCount": {"Ref": "MaxReceiveCount"},
            },
        ),
    }


def state_template(stage: str = "dev", tiers: Sequence[str] | None = None) -> dict[str, Any]:
    """infra/resources.json plus every tier's queues, parameters and outputs. `stage` is the Chalice stage whose
    function timeouts set the visibility timeouts; the resources' names keep `${Stage}`."""
    tiers = tuple(TIER_NAMES if tiers is None else tiers)
    template = json.loads(RESOURCES.read_text())
    template["Parameters"] = {**template.get("Parameters", {}), **_parameters(stage, tiers)}
    queues: dict[str, Any] = {}
    for tier in tiers:
        queues.update(tier_queues(tier))
        template.setdefault("Outputs", {})[f"{tier_id(tier)}QueueUrl"] = {"Value": {"Ref": queue_id(tier)}}
    template["Resources"] = {**template["Resources"], **queues}
    return dict(template)
