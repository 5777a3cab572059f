"""The deployment template keeps the promises the code relies on.

The template is the one `make package` writes to build/sam.json: Chalice's own generator (run through its
Python API, without the pip/zip step that needs the network and most of the time) merged with the template
infra/build_template.py builds. infra/package.sh checks that the two agree on every real package.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from pathlib import Path
from typing import Any

import pytest

from chalicelib.adapters.fargate_sandbox import CONTAINER_NAME
from chalicelib.adapters.metrics import NAMESPACE
from chalicelib.config import APP_NAME, TIER_NAMES, Settings, settings_from_env
from chalicelib.metric_names import FARGATE_LAUNCH_FAILURES, SANDBOX_RESULT_REJECTED, TIER_DIMENSION
from chalicelib.sandbox.selection import LAMBDA_TIMEOUT_S, SANDBOX_HEADROOM_MB, SANDBOX_MEMORY_CLASSES
from infra import build_template, chalice_template, checks, state
from infra.chalice_template import ChaliceTemplate
from infra.state import queue_id, tier_id
from infra.wiring import PLATFORM_ENVIRONMENT, SANDBOX_FUNCTIONS, sandbox_reservation_id

pytestmark = pytest.mark.xdist_group("infra")

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "chalicelib" / "adapters"
STAGE = "dev"
SETTINGS = Settings(stage=STAGE)
TABLES = {"jobs": "JobsTable", "keys": "KeysTable", "counters": "CountersTable"}
QUEUES = [(tier, dead) for tier in TIER_NAMES for dead in (False, True)]
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@pytest.fixture(scope="module")
def chalice() -> ChaliceTemplate:
    """What `chalice package` generates before the merge, built once per test process."""
    return chalice_template.generate(STAGE)


@pytest.fixture(scope="module")
def template(chalice: ChaliceTemplate) -> dict[str, Any]:
    """The packaged template (what chalice package writes, as build_template.build makes it)."""
    return build_template.packaged(build_template.merge_template(STAGE, chalice), chalice.template)


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return dict(template["Resources"])


# --- helpers ------------------------------------------------------------------------------------------


def resolve(template: dict[str, Any], value: Any, stage: str = STAGE) -> Any:
    """A property value with parameters at their defaults and ${Stage} substituted (what a deploy gives)."""
    if isinstance(value, dict) and "Ref" in value and value["Ref"] in template["Parameters"]:
        return stage if value["Ref"] == "Stage" else template["Parameters"][value["Ref"]]["Default"]
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str) and "${" in value["Fn::Sub"]:
        return value["Fn::Sub"].replace("${Stage}", stage)
    if isinstance(value, dict):
        return {k: resolve(template, v, stage) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(template, v, stage) for v in value]
    return value


def of_type(resources: dict[str, Any], type_: str) -> dict[str, Any]:
    return {lid: spec for lid, spec in resources.items() if spec.get("Type") == type_}


def functions(resources: dict[str, Any]) -> dict[str, Any]:
    return of_type(resources, "AWS::Serverless::Function")


def statements(resources: dict[str, Any], function_id: str) -> list[dict[str, Any]]:
    role_id = resources[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    policies = resources[role_id]["Properties"].get("Policies", [])
    return [s for policy in policies for s in policy["PolicyDocument"]["Statement"]]


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def allowed_actions(statements_: list[dict[str, Any]]) -> set[str]:
    return {a for s in statements_ if s["Effect"] == "Allow" for a in _listed(s["Action"])}


def allows(statements_: list[dict[str, Any]], action: str) -> bool:
    return any(fnmatch.fnmatch(action.lower(), pattern.lower()) for pattern in allowed_actions(statements_))


def sqs_listener(template: dict[str, Any], queue: str) -> tuple[str, str, dict[str, Any]]:
    found = [e for e in checks.sqs_event_sources(template) if checks.event_queue(e[2]) == queue]
    assert len(found) == 1, f"{queue} should feed exactly one function, found {[f[:2] for f in found]}"
    return found[0]


def alarms_on(resources: dict[str, Any], dimension: dict[str, Any]) -> dict[str, Any]:
    """Alarms with a metric (plain or inside metric math) that has `dimension`."""

    def dims(alarm: dict[str, Any]) -> list[Any]:
        props = alarm["Properties"]
        out = list(props.get("Dimensions", []))
        for metric in props.get("Metrics", []):
            out += metric.get("MetricStat", {}).get("Metric", {}).get("Dimensions", [])
        return out

    return {lid: a for lid, a in of_type(resources, "AWS::CloudWatch::Alarm").items() if dimension in dims(a)}


# --- SQS event sources --------------------------------------------------------------------------------


def test_the_packaged_template_has_no_dangling_reference_or_broken_patch(template: dict[str, Any]) -> None:
    assert checks.problems(template) == []


def test_chalice_names_the_sqs_event_sources_as_the_merge_patches_them(template: dict[str, Any]) -> None:
    found = {(function_id, event_id) for function_id, event_id, _ in checks.sqs_event_sources(template)}
    expected = set()
    for tier in TIER_NAMES:
        for kind in ("Worker", "Dlq"):
            expected.add((f"{kind}{tier_id(tier)}", f"{kind}{tier_id(tier)}SqsEventSource"))
    expected.add(("DeliverWebhooks", "DeliverWebhooksSqsEventSource"))
    assert found == expected


@pytest.mark.parametrize(("tier", "dead_letter"), QUEUES)
def test_every_queue_feeds_one_function_that_reports_batch_item_failures(
    template: dict[str, Any], chalice: ChaliceTemplate, tier: str, dead_letter: bool
) -> None:
    function_id, _, properties = sqs_listener(template, queue_id(tier, dead_letter))
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BatchSize"] == 1
    timeout = template["Resources"][function_id]["Properties"]["Timeout"]
    visibility = resolve(
        template, template["Resources"][queue_id(tier, dead_letter)]["Properties"]["VisibilityTimeout"]
    )
    # AWS recommends 6x the function's timeout for a Lambda event source; below 1x Lambda refuses the mapping.
    assert visibility == 6 * timeout
    # ... and the timeout is the one .chalice/config.json gives that function, not a number copied by hand.
    name = chalice.function_names[function_id]
    assert timeout == state.function_timeout(name, STAGE)


# --- queues and tables --------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIER_NAMES)
def test_tier_queue_is_fifo_with_redrive_to_its_fifo_dlq(template: dict[str, Any], tier: str) -> None:
    queue = resolve(template, template["Resources"][queue_id(tier)]["Properties"])
    dlq = resolve(template, template["Resources"][queue_id(tier, dead_letter=True)]["Properties"])
    assert queue["QueueName"] == SETTINGS.queue(tier)
    assert dlq["QueueName"] == SETTINGS.queue(tier, dead_letter=True)
    for props in (queue, dlq):
        assert props["FifoQueue"] is True
        assert props["ContentBasedDeduplication"] is False  # every send names its deduplication id
    # Message groups are per key slot: throughput and deduplication must be per group too.
    assert queue["DeduplicationScope"] == "messageGroup"
    assert queue["FifoThroughputLimit"] == "perMessageGroupId"
    redrive = queue["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": [queue_id(tier, dead_letter=True), "Arn"]}
    assert int(redrive["maxReceiveCount"]) >= 1


def _indexes_the_code_queries() -> set[str]:
    source = "\n".join(p.read_text() for p in ADAPTERS.glob("*.py"))
    return set(re.findall(r"IndexName[\"']?\s*[:=]\s*[\"'](\w+)[\"']", source))


def test_tables_have_the_names_ttl_and_indexes_the_code_uses(template: dict[str, Any]) -> None:
    tables = {
        lid: resolve(template, spec["Properties"])
        for lid, spec in of_type(template["Resources"], "AWS::DynamoDB::Table").items()
    }
    assert {name: tables[lid]["TableName"] for name, lid in TABLES.items()} == {n: SETTINGS.table(n) for n in TABLES}
    for lid in ("JobsTable", "CountersTable"):  # jobs and counters expire; keys live until revoked
        assert tables[lid]["TimeToLiveSpecification"] == {"AttributeName": "ttl", "Enabled": True}
    assert '"ttl"' in (ADAPTERS / "jobs_dynamodb.py").read_text() + (ADAPTERS / "counters_dynamodb.py").read_text()
    used = _indexes_the_code_queries()
    assert used, "no IndexName found in chalicelib/adapters: has the query code moved?"
    for index in used:
        owners = [
            lid for lid, t in tables.items() if index in {g["IndexName"] for g in t.get("GlobalSecondaryIndexes", [])}
        ]
        assert owners, f"the code queries index {index!r}, which no table defines"
    for table in tables.values():
        defined = {a["AttributeName"] for a in table["AttributeDefinitions"]}
        for gsi in table.get("GlobalSecondaryIndexes", []):
            assert {k["AttributeName"] for k in gsi["KeySchema"]} <= defined


def test_packaged_queues_and_tables_are_the_state_template_verbatim(template: dict[str, Any]) -> None:
    """One source of truth: no fragment and no Chalice default changed what the local stack creates."""
    source = state.state_template(STAGE)
    assert {queue_id(t, d) for t, d in QUEUES} <= set(source["Resources"])
    for logical_id, spec in source["Resources"].items():
        assert template["Resources"][logical_id] == spec, logical_id
    for name, spec in source["Parameters"].items():
        if name != "Stage":  # pinned to the packaged stage by build_template
            assert template["Parameters"][name] == spec, name


def _table_as_created(ddb: Any, name: str) -> dict[str, Any]:
    table = ddb.describe_table(TableName=name)["Table"]
    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    return {
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "Indexes": {
            g["IndexName"]: (g["KeySchema"], g["Projection"]["ProjectionType"])
            for g in table.get("GlobalSecondaryIndexes", [])
        },
        "Ttl": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None,
    }


def _table_as_declared(props: dict[str, Any]) -> dict[str, Any]:
    ttl = props.get("TimeToLiveSpecification")
    return {
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": sorted(props["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "Indexes": {
            g["IndexName"]: (g["KeySchema"], g["Projection"]["ProjectionType"])
            for g in props.get("GlobalSecondaryIndexes", [])
        },
        "Ttl": ttl["AttributeName"] if ttl and ttl["Enabled"] else None,
    }


def _as_attribute(value: Any) -> str:
    """A template value as SQS reports the attribute (booleans as "true"/"false")."""
    return str(value).lower() if isinstance(value, bool) else str(value)


QUEUE_ATTRIBUTES = (
    "FifoQueue",
    "ContentBasedDeduplication",
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


def test_local_stack_creates_the_queues_and_tables_the_template_declares(
    template: dict[str, Any], stack_env: dict[str, Any]
) -> None:
    from chalicelib.adapters.aws import client

    stage = stack_env["stage"]
    for logical_id, spec in of_type(template["Resources"], "AWS::DynamoDB::Table").items():
        declared = resolve(template, spec["Properties"], stage)
        assert _table_as_created(client("dynamodb"), declared["TableName"]) == _table_as_declared(declared), logical_id
    sqs = client("sqs")
    for logical_id, spec in of_type(template["Resources"], "AWS::SQS::Queue").items():
        declared = resolve(template, spec["Properties"], stage)
        url = sqs.get_queue_url(QueueName=declared["QueueName"])["QueueUrl"]
        created = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        for name in QUEUE_ATTRIBUTES:
            if name in declared:
                assert created.get(name) == _as_attribute(declared[name]), (logical_id, name)
        if "RedrivePolicy" in declared:
            redrive = json.loads(created["RedrivePolicy"])
            target = template["Resources"][declared["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]]
            assert redrive["deadLetterTargetArn"].endswith(
                ":" + resolve(template, target["Properties"]["QueueName"], stage)
            )
            assert int(redrive["maxReceiveCount"]) == int(declared["RedrivePolicy"]["maxReceiveCount"])


def test_webhook_queue_is_standard_with_a_dlq_and_the_websocket_endpoint_is_the_apps(
    template: dict[str, Any],
) -> None:
    queue = resolve(template, template["Resources"]["WebhookQueue"]["Properties"])
    assert queue["QueueName"] == SETTINGS.webhook_queue() and "FifoQueue" not in queue  # per-message delays
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]}
    assert template["Resources"]["WebsocketAPI"]["Properties"]["ProtocolType"] == "WEBSOCKET"
    stage = template["Resources"]["WebsocketAPIStage"]["Properties"]["StageName"]
    for name in ("CODERUNNER_WS_URL", "CODERUNNER_WS_MANAGEMENT_URL"):
        parts = PLATFORM_ENVIRONMENT[name]["Fn::Join"][1]
        assert parts[1] == {"Ref": "WebsocketAPI"} and parts[2]["Fn::Sub"].endswith(f"/{stage}"), name
    assert "DeliveryTable" in template["Resources"] and alarms_on(
        template["Resources"],
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}},
    )


# --- the sandboxes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sandbox", SANDBOX_FUNCTIONS)
def test_sandbox_function_sits_in_private_subnets_behind_a_closed_security_group(
    resources: dict[str, Any], sandbox: str
) -> None:
    vpc = resources[sandbox]["Properties"]["VpcConfig"]
    assert vpc["SubnetIds"] == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
    for subnet in vpc["SubnetIds"]:
        assert resources[subnet["Ref"]]["Properties"]["MapPublicIpOnLaunch"] is False
    (group,) = vpc["SecurityGroupIds"]
    rules = resources[group["Ref"]]["Properties"]
    assert "SecurityGroupIngress" not in rules
    assert [r["CidrIp"] for r in rules["SecurityGroupEgress"]] == ["127.0.0.1/32"]  # replaces the default allow-all
    # No way out of the VPC: no internet or NAT gateway, no route at all in the private route table.
    for type_ in ("InternetGateway", "NatGateway", "VPCGatewayAttachment", "Route", "EgressOnlyInternetGateway"):
        assert not of_type(resources, f"AWS::EC2::{type_}"), type_


@pytest.mark.parametrize(("sandbox", "size"), SANDBOX_FUNCTIONS.items())
def test_sandbox_functions_are_sized_by_memory_class_with_a_reservation_parameter(
    resources: dict[str, Any], template: dict[str, Any], sandbox: str, size: int
) -> None:
    props = resources[sandbox]["Properties"]
    assert props["MemorySize"] == size and props["Timeout"] == LAMBDA_TIMEOUT_S  # what selection.py assumes
    parameter = template["Parameters"][sandbox_reservation_id(size)]
    assert parameter["Default"] == 0  # a new account (100 unreserved, a low quota) accepts it
    assert str(SETTINGS.sandbox_concurrency(size)) in parameter["Description"]  # what never throttles a worker
    condition, reserved, unreserved = props["ReservedConcurrentExecutions"]["Fn::If"]
    assert reserved == {"Ref": sandbox_reservation_id(size)} and unreserved == {"Ref": "AWS::NoValue"}
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [reserved, 0]}]}


def test_every_tier_can_run_its_largest_job_in_a_sandbox_class() -> None:
    for policy in SETTINGS.tiers.values():
        assert policy.max_memory_mb + SANDBOX_HEADROOM_MB <= max(SANDBOX_MEMORY_CLASSES), policy.name
    # The smallest class is one full vCPU (1,769 MB): a job's time limits assume a whole core.
    assert min(SANDBOX_MEMORY_CLASSES) >= 1769


def test_worker_concurrency_is_the_tiers_capacity(template: dict[str, Any]) -> None:
    for tier in TIER_NAMES:
        function_id, _, event = sqs_listener(template, queue_id(tier))
        scaling = event.get("ScalingConfig", {})  # the event's properties
        assert scaling.get("MaximumConcurrency") == max(2, SETTINGS.capacity(tier)), function_id


@pytest.mark.parametrize("sandbox", SANDBOX_FUNCTIONS)
def test_sandbox_role_holds_no_permission_user_code_could_use(resources: dict[str, Any], sandbox: str) -> None:
    granted = statements(resources, sandbox)
    allowed = allowed_actions(granted)
    assert allowed <= {"logs:CreateLogStream", "logs:PutLogEvents"} | ENI_ACTIONS
    for service in ("dynamodb", "sqs", "s3", "lambda", "ecs", "iam", "sts", "kms", "secretsmanager", "ssm"):
        assert not any(a.startswith(f"{service}:") for a in allowed), service
    # Lambda needs the ENI actions on the role to attach the VPC; credentials inside the function are denied them.
    denied = [s for s in granted if s["Effect"] == "Deny" and "lambda:SourceFunctionArn" in s["Condition"]["ArnLike"]]
    assert {a for s in denied for a in _listed(s["Action"])} >= ENI_ACTIONS
    logs = next(s for s in granted if "logs:PutLogEvents" in _listed(s["Action"]))
    assert resolve({"Parameters": {}}, logs["Resource"]).endswith(
        f":log-group:/aws/lambda/{APP_NAME}-{STAGE}-sandbox_*:*"
    )
    assert "logs:CreateLogGroup" not in allowed  # the stack creates the group


def _arn(kind: str, ref: str) -> dict[str, str]:
    return {"Fn::Sub": f"arn:${{AWS::Partition}}:ec2:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/${{{ref}}}"}


@pytest.mark.parametrize("sandbox", SANDBOX_FUNCTIONS)
def test_sandbox_role_network_actions_reach_only_the_sandbox_vpc(resources: dict[str, Any], sandbox: str) -> None:
    """Credentials read out of the sandbox are usable outside it, where the Deny on lambda:SourceFunctionArn does
    not apply: every network action that IAM can scope is scoped to the sandbox VPC, subnets and group."""
    allows = [s for s in statements(resources, sandbox) if s["Effect"] == "Allow"]
    vpc = {"ec2:Vpc": _arn("vpc", "SandboxVpc")}
    subnets = [_arn("subnet", "PrivateSubnetA"), _arn("subnet", "PrivateSubnetB")]
    for statement in allows:
        actions = set(_listed(statement["Action"]))
        if actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}:
            continue
        if actions == {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}:
            # IAM has no resource type or condition key for these: say so where it is granted.
            assert statement["Resource"] == "*" and "CannotBeScoped" in statement["Sid"]
            continue
        assert statement["Resource"] != "*", statement["Sid"]
        resources_ = _listed(statement["Resource"])
        if all("network-interface/*" in r["Fn::Sub"] for r in resources_):
            assert statement["Condition"]["ArnEquals"]["ec2:Vpc"] == vpc["ec2:Vpc"], statement["Sid"]
        else:  # the subnets and security group CreateNetworkInterface uses, named one by one
            assert actions == {"ec2:CreateNetworkInterface"}
            assert resources_ == [*subnets, _arn("security-group", "SandboxFunctionSecurityGroup.GroupId")]
    create = [s for s in allows if "ec2:CreateNetworkInterface" in _listed(s["Action"]) and "Condition" in s]
    assert [s["Condition"]["ArnEquals"]["ec2:Subnet"] for s in create] == [subnets]
    # The reasoning is written next to the permissions, for whoever reads the role in the console.
    role = resources[sandbox]["Properties"]["Role"]["Fn::GetAtt"][0]
    assert "cannot be scoped" in resources[role]["Properties"]["Description"]


def test_no_sandbox_reserves_concurrency_but_through_its_parameter() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert "reserved_concurrency" not in json.dumps(config), "the parameters are the one place that reserves"


def test_fargate_task_definition_has_a_read_only_root_and_no_task_role(
    resources: dict[str, Any], template: dict[str, Any]
) -> None:
    task = resources["SandboxTaskDefinition"]["Properties"]
    assert "TaskRoleArn" not in task
    assert task["RequiresCompatibilities"] == ["FARGATE"] and task["NetworkMode"] == "awsvpc"
    (container,) = task["ContainerDefinitions"]
    assert container["Name"] == CONTAINER_NAME  # the adapter overrides the environment of this container
    assert container["ReadonlyRootFilesystem"] is True
    assert "Secrets" not in container and "Environment" not in container
    # The completion rule Chalice generates listens to this task family.
    pattern = resources["FargateDone"]["Properties"]["Events"]["FargateDoneEvent"]["Properties"]["Pattern"]
    assert pattern["detail"]["group"] == ["family:" + resolve(template, task["Family"])]


def test_functions_get_the_settings_the_app_reads(resources: dict[str, Any], template: dict[str, Any]) -> None:
    for function_id, spec in functions(resources).items():
        variables = spec["Properties"]["Environment"]["Variables"]
        if function_id in SANDBOX_FUNCTIONS:
            leaked = (set(PLATFORM_ENVIRONMENT) - {"CODERUNNER_STAGE"}) & set(variables)
            assert not leaked, "user code runs in the sandbox: it gets no resource names"
            continue
        env = {name: "x,y" if isinstance(value, dict) else value for name, value in variables.items()}
        env["CODERUNNER_STAGE"] = STAGE
        settings = settings_from_env(env)
        assert settings.sandbox_mode == "cloud", function_id
        assert settings.sandbox_function and settings.fargate_cluster and settings.fargate_task_definition
        assert settings.fargate_subnets and settings.fargate_security_groups and settings.artifacts_bucket
        prefix = resolve(template, variables["CODERUNNER_SANDBOX_FUNCTION"])
        for sandbox in SANDBOX_FUNCTIONS:  # the Lambda adapter appends "_<mb>" to the prefix
            assert resolve(template, resources[sandbox]["Properties"]["FunctionName"]).startswith(prefix + "_")
        assert variables["CODERUNNER_RESULTS_BUCKET"] == {"Ref": "ResultsBucket"}
        assert spec["Properties"]["FunctionName"] == {"Fn::Sub": f"{APP_NAME}-${{Stage}}-" + function_name(function_id)}


def test_functions_log_json_without_lambdas_start_end_and_report_lines(resources: dict[str, Any]) -> None:
    """Three lines an invocation, billed by the byte: dropped (make cost counts what is left)."""
    for function_id, spec in functions(resources).items():
        logging_config = spec["Properties"]["LoggingConfig"]
        assert logging_config["LogFormat"] == "JSON" and logging_config["SystemLogLevel"] == "WARN", function_id
        assert logging_config["ApplicationLogLevel"] == "INFO", function_id  # the app's own lines stay


def function_name(function_id: str) -> str:
    """app.py's name of a function ("WorkerFree" -> "worker_free"), as wiring.py names it."""
    return "api_handler" if function_id == "APIHandler" else re.sub(r"(?<!^)([A-Z])", r"_\1", function_id).lower()


# --- the workers' permissions -------------------------------------------------------------------------

# Operations whose IAM action is not simply "<service>:<Operation>" (plus what RunTask with tags needs).
IAM_ACTIONS = {
    ("lambda", "Invoke"): ["lambda:InvokeFunction"],
    ("dynamodb", "TransactWriteItems"): ["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"],
    ("dynamodb", "TransactGetItems"): ["dynamodb:GetItem"],
    ("s3", "HeadObject"): ["s3:GetObject"],
    ("s3", "ListObjectsV2"): ["s3:ListBucket"],
    ("ecs", "RunTask"): ["ecs:RunTask", "ecs:TagResource", "iam:PassRole"],
    ("apigatewaymanagementapi", "PostToConnection"): ["execute-api:ManageConnections"],
    ("apigatewaymanagementapi", "GetConnection"): ["execute-api:ManageConnections"],
}


# The functions of result delivery (app.py's WebSocket handlers and the webhook consumer) have their own,
# smaller role (.chalice/policy-delivery.json): the adapters they use, and reading keys to authenticate.
DELIVERY_FUNCTIONS = {"WebsocketConnect", "WebsocketMessage", "WebsocketDisconnect", "DeliverWebhooks"}
DELIVERY_ADAPTERS = (
    "connections_apigw.py",
    "devices_dynamodb.py",
    "inbox_dynamodb.py",
    "job_events_dynamodb.py",
    "webhook_queue_sqs.py",
    "webhooks_dynamodb.py",
)


def aws_calls_of_the_adapters(names: tuple[str, ...] | None = None) -> set[str]:
    """IAM actions of every AWS API call in chalicelib/adapters (the only code that touches boto3), or in
    the adapter files `names`."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    actions = set()
    for path in ADAPTERS.glob("*.py"):
        if names is not None and path.name not in names:
            continue
        source = path.read_text()
        called = set(re.findall(r"\.(\w+)\(", source))
        # client("svc") builds a client where it is used; LazyClient("svc", ...) on an adapter class.
        for service in set(re.findall(r"(?:client|LazyClient)\(\s*[\"'](\w+)[\"']\s*[,)]", source)):
            prefix = session.get_service_model(service).signing_name
            for operation in session.get_service_model(service).operation_names:
                if xform_name(operation) in called:
                    actions.update(IAM_ACTIONS.get((service, operation), [f"{prefix}:{operation}"]))
    return actions


def test_worker_and_api_roles_allow_every_aws_call_the_adapters_make(resources: dict[str, Any]) -> None:
    needed = aws_calls_of_the_adapters()
    assert {"dynamodb:UpdateItem", "sqs:SendMessage", "lambda:InvokeFunction", "ecs:RunTask", "s3:PutObject"} <= needed
    assert "execute-api:ManageConnections" in needed
    needed |= {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}  # the event source mappings poll
    needed |= {"logs:CreateLogStream", "logs:PutLogEvents"}
    delivery = aws_calls_of_the_adapters(DELIVERY_ADAPTERS) | {"dynamodb:GetItem", "logs:PutLogEvents"}
    delivery |= {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
    assert set(functions(resources)) >= DELIVERY_FUNCTIONS
    for function_id in set(functions(resources)) - set(SANDBOX_FUNCTIONS):
        granted = statements(resources, function_id)
        wanted = delivery if function_id in DELIVERY_FUNCTIONS else needed
        assert sorted(a for a in wanted if not allows(granted, a)) == [], function_id
    for function_id in DELIVERY_FUNCTIONS:  # least privilege: no sandbox, no tier queue
        allowed = allowed_actions(statements(resources, function_id))
        assert not {"lambda:InvokeFunction", "ecs:RunTask", "s3:PutObject", "dynamodb:Scan"} & allowed, function_id


def test_worker_and_api_roles_name_the_stacks_resources_not_wildcards(resources: dict[str, Any]) -> None:
    granted = statements(resources, "WorkerFree")
    for statement in granted:
        actions = _listed(statement["Action"])
        assert "*" not in actions and not any(a.endswith(":*") for a in actions), statement["Sid"]
        if statement["Resource"] == "*":  # only where IAM has no resource to name, and then with a condition
            assert actions == ["cloudwatch:PutMetricData"] and statement["Condition"], statement["Sid"]
    passed = [s for s in granted if "iam:PassRole" in _listed(s["Action"])]
    assert [s["Resource"] for s in passed] == [{"Fn::GetAtt": ["SandboxExecutionRole", "Arn"]}]
    # The queues of every tier and the webhook queue and its DLQ, and only those.
    sqs = [s for s in granted if "sqs:SendMessage" in _listed(s["Action"])]
    queues = sorted(r["Fn::GetAtt"][0] for s in sqs for r in s["Resource"])
    assert queues == sorted([queue_id(t, d) for t, d in QUEUES] + ["WebhookQueue", "WebhookDeadLetterQueue"])


# --- alarms, dashboard ---------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIER_NAMES)
def test_every_dead_letter_queue_has_an_alarm(resources: dict[str, Any], tier: str) -> None:
    dlq = queue_id(tier, dead_letter=True)
    alarms = alarms_on(resources, {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}})
    assert alarms, f"no alarm watches {dlq}"
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        assert (
            alarm["Properties"]["Threshold"] == 0
            and alarm["Properties"]["ComparisonOperator"] == "GreaterThanThreshold"
        )


@pytest.mark.parametrize("tier", TIER_NAMES)
def test_every_tier_has_queue_age_and_worker_alarms(
    resources: dict[str, Any], template: dict[str, Any], tier: str
) -> None:
    queue = alarms_on(resources, {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id(tier), "QueueName"]}})
    assert {a["Properties"]["MetricName"] for a in queue.values()} == {"ApproximateAgeOfOldestMessage"}
    worker_id = sqs_listener(template, queue_id(tier))[0]
    worker = alarms_on(resources, {"Name": "FunctionName", "Value": {"Ref": worker_id}})
    assert {lid.removeprefix(tier_id(tier)) for lid in worker} == {"WorkerErrorRateAlarm", "WorkerThrottlesAlarm"}


def test_sandbox_and_safety_net_functions_have_error_alarms(resources: dict[str, Any]) -> None:
    for function_id in (*SANDBOX_FUNCTIONS, "Cleanup", "FargateDone"):
        metrics = {
            a["Properties"].get("MetricName")
            for a in alarms_on(resources, {"Name": "FunctionName", "Value": {"Ref": function_id}}).values()
        }
        assert "Errors" in metrics, function_id
    for sandbox in SANDBOX_FUNCTIONS:
        assert "Throttles" in {
            a["Properties"].get("MetricName")
            for a in alarms_on(resources, {"Name": "FunctionName", "Value": {"Ref": sandbox}}).values()
        }


def test_dashboard_shows_every_tier_and_the_apps_metrics(resources: dict[str, Any]) -> None:
    body_template = resources["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    body = json.loads(re.sub(r"\$\{[^}]+\}", "x", body_template))  # valid JSON once CloudFormation substitutes
    text = json.dumps(body)
    for tier in TIER_NAMES:
        assert f"${{{queue_id(tier)}.QueueName}}" in body_template
        assert f'"tier", "{tier}"' in text
    assert "JobsFinished" in body_template and NAMESPACE in body_template
    for metric in ("ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "RunTime", "Errors"):
        assert metric in text
    alarm_widget = next(w for w in body["widgets"] if w["type"] == "alarm")
    assert len(alarm_widget["properties"]["alarms"]) == len(of_type(resources, "AWS::CloudWatch::Alarm"))


def test_the_dashboards_dimensions_are_the_ones_powertools_emits() -> None:
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    assert config["environment_variables"]["POWERTOOLS_SERVICE_NAME"] == APP_NAME
    assert config["environment_variables"]["POWERTOOLS_METRICS_NAMESPACE"] == NAMESPACE


@pytest.mark.parametrize("bucket_id", ["ArtifactsBucket", "ResultsBucket"])
def test_buckets_are_private_encrypted_and_expire_their_objects(resources: dict[str, Any], bucket_id: str) -> None:
    bucket = resources[bucket_id]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert any(
        r.get("ExpirationInDays") and r["Status"] == "Enabled" for r in bucket["LifecycleConfiguration"]["Rules"]
    )


def test_large_payloads_expire_with_their_jobs(resources: dict[str, Any]) -> None:
    rules = resources["ResultsBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert [r["ExpirationInDays"] for r in rules if "ExpirationInDays" in r] == [SETTINGS.job_ttl_days]


def test_max_receive_count_is_the_attempts_plus_slack(template: dict[str, Any]) -> None:
    """Waiting for a slot no longer spends receives (jobs are parked), so SQS's DLQ catches poison messages."""
    parameter = template["Parameters"]["MaxReceiveCount"]
    assert parameter["Default"] == SETTINGS.max_receive_count == SETTINGS.max_attempts + 2
    assert "parked" in parameter["Description"]


# --- the checks themselves, and the linter ------------------------------------------------------------


def test_the_checks_catch_what_a_broken_merge_looks_like(template: dict[str, Any]) -> None:
    broken = copy.deepcopy(template)
    resources = broken["Resources"]
    del resources["WorkerPro"]["Properties"]["Events"]["WorkerProSqsEventSource"]["Properties"]["FunctionResponseTypes"]
    resources["DlqFree"]["Properties"]["Events"]["DlqFreeSqsEventSource"]["Properties"]["Queue"] = {
        "Fn::Sub": "arn:aws:sqs:us-east-1:1:elsewhere",
        "Fn::GetAtt": ["FreeDeadLetterQueue", "Arn"],
    }
    resources["Renamed"] = {"Properties": {"VpcConfig": {}}}
    resources["FreeQueueAgeAlarm"]["Properties"]["AlarmActions"] = [{"Ref": "NoSuchTopic"}]
    resources["DlqPro"]["Properties"]["Timeout"] = 900
    resources["WorkerFree"]["Properties"]["Events"]["WorkerFreeSqsEventSource"]["Properties"][
        "MaximumBatchingWindowInSeconds"
    ] = 0
    del resources["CountersTable"]["DeletionPolicy"]
    resources["JobsTable"]["Properties"]["DeletionProtectionEnabled"] = False
    del resources["FreeQueue"]["UpdateReplacePolicy"]
    resources["WorkerProRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]["Resource"] = "TODO"
    metrics = resources["JobsTableThrottlesAlarm"]["Properties"]["Metrics"]
    metrics[:0] = [dict(metrics[0], Id=f"extra{n}") for n in range(3)]
    found = "\n".join(checks.problems(broken))
    for needle in (
        "WorkerProSqsEventSource: FunctionResponseTypes",
        "mixed with other keys",
        "/Resources/Renamed: no Type",
        "'NoSuchTopic' is not defined",
        "DlqProSqsEventSource: ProDeadLetterQueue VisibilityTimeout 360 s < 6 x the function's timeout 900 s",
        "WorkerFreeSqsEventSource: MaximumBatchingWindowInSeconds on a FIFO queue",
        "/Resources/CountersTable: AWS::DynamoDB::Table without DeletionPolicy: Retain",
        "/Resources/JobsTable: DeletionProtectionEnabled is not true",
        "/Resources/FreeQueue: AWS::SQS::Queue without an explicit",
        "'TODO' is not an ARN",
        "/Resources/JobsTableThrottlesAlarm: 11 metrics",
    ):
        assert needle in found


@pytest.mark.timeout(600)  # cfn-lint on the whole template: ~60 s alone, over 120 s on a loaded 2-core machine
def test_packaged_template_passes_cfn_lint(template: dict[str, Any]) -> None:
    lint = pytest.importorskip("cfnlint.api")
    # The checks `cfn-lint build/sam.json` runs (errors and warnings), as `make package` runs them.
    args = lint.ManualArgs(regions=["us-east-1"], ignore_checks=["I"])
    errors = [str(m) for m in lint.lint(json.dumps(template), args) if m.rule.id[0] in "EW"]
    assert errors == []


def test_every_function_handler_is_a_callable_of_app(template: dict[str, Any]) -> None:
    import app

    assert checks.missing_handlers(template, app) == []


# --- issue 11: queue settings, alarms, API operations, stateful resources ------------------------------


def test_fifo_event_sources_take_no_batching_window(template: dict[str, Any]) -> None:
    """Chalice 1.34 writes MaximumBatchingWindowInSeconds: 0; AWS documents no batching window on FIFO sources."""

    def fifo(properties: dict[str, Any]) -> bool:
        return template["Resources"][checks.event_queue(properties)]["Properties"].get("FifoQueue") is True

    sources = [source for source in checks.sqs_event_sources(template) if fifo(source[2])]
    assert len(sources) == 2 * len(TIER_NAMES)  # each tier's queue and DLQ (the webhook queue is a standard one)
    for _, event_id, properties in sources:
        assert properties["MaximumBatchingWindowInSeconds"] == {"Ref": "AWS::NoValue"}, event_id


def test_max_receive_count_is_a_parameter(template: dict[str, Any]) -> None:
    assert template["Parameters"]["MaxReceiveCount"]["Type"] == "Number"
    for tier in TIER_NAMES:
        redrive = template["Resources"][queue_id(tier)]["Properties"]["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}


def test_every_table_has_a_throttling_alarm_over_the_table_and_its_indexes(resources: dict[str, Any]) -> None:
    for table_id, table in of_type(resources, "AWS::DynamoDB::Table").items():
        (alarm,) = alarms_on(resources, {"Name": "TableName", "Value": {"Ref": table_id}}).values()
        metrics = alarm["Properties"]["Metrics"]
        watched = {
            (m["MetricStat"]["Metric"]["MetricName"], next((d["Value"] for d in dims[1:]), None))
            for m in metrics
            if "MetricStat" in m
            for dims in [m["MetricStat"]["Metric"]["Dimensions"]]
        }
        indexes = [None] + [g["IndexName"] for g in table["Properties"].get("GlobalSecondaryIndexes", [])]
        assert watched == {(f"{kind}ThrottleEvents", index) for kind in ("Read", "Write") for index in indexes}
        (total,) = [m for m in metrics if m.get("ReturnData")]
        assert all(f"FILL({m['Id']}, 0)" in total["Expression"] for m in metrics if "MetricStat" in m)
        assert alarm["Properties"]["Threshold"] == 0 and alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


@pytest.mark.parametrize("tier", TIER_NAMES)
def test_every_tier_alarms_on_fargate_launch_failures_the_code_emits(resources: dict[str, Any], tier: str) -> None:
    alarms = alarms_on(resources, {"Name": TIER_DIMENSION, "Value": tier})
    (alarm,) = [a["Properties"] for a in alarms.values() if a["Properties"]["MetricName"] == FARGATE_LAUNCH_FAILURES]
    assert alarm["Namespace"] == NAMESPACE
    # Powertools adds the service dimension to every metric; a dimension set that differs matches nothing.
    assert {"Name": "service", "Value": APP_NAME} in alarm["Dimensions"] and len(alarm["Dimensions"]) == 2
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_the_sandbox_function_runs_the_fargate_tasks_image(resources: dict[str, Any]) -> None:
    """One image for both sandboxes (the same runtimes at the same versions, no boto3): the function is a
    container image of the task's image, started by Lambda's runtime client on the sandbox handler."""
    (container,) = resources["SandboxTaskDefinition"]["Properties"]["ContainerDefinitions"]
    for function_id in SANDBOX_FUNCTIONS:  # every memory class
        function = resources[function_id]["Properties"]
        assert function["PackageType"] == "Image" and function["ImageUri"] == container["Image"]
        assert not {"Runtime", "Handler", "CodeUri", "Layers"} & set(function)
        assert function["ImageConfig"]["EntryPoint"] == ["python", "-m", "awslambdaric"]
        assert function["ImageConfig"]["Command"] == ["chalicelib.sandbox.lambda_entry.handle"]
    # No init process in the task: its environment (the result key, the URLs) would be readable by the job.
    assert container["LinuxParameters"]["InitProcessEnabled"] is False


def test_a_rejected_sandbox_result_of_either_cloud_sandbox_raises_the_alarm(resources: dict[str, Any]) -> None:
    alarm = resources["SandboxResultRejectedAlarm"]["Properties"]
    stats = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert {(m["Namespace"], m["MetricName"]) for m in stats} == {(NAMESPACE, SANDBOX_RESULT_REJECTED)}
    # The worker and fargate_done emit it with `sandbox` (Powertools adds `service`): the same dimension sets.
    dimensions = sorted(tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in stats)
    assert dimensions == [(("sandbox", kind), ("service", APP_NAME)) for kind in ("fargate", "lambda")]
    (total,) = [m for m in alarm["Metrics"] if "Expression" in m]
    assert total["ReturnData"] and alarm["Threshold"] == 0 and alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_api_submit_latency_p99_alarm(resources: dict[str, Any], template: dict[str, Any]) -> None:
    (alarm,) = [
        a["Properties"]
        for a in of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == "Latency"
    ]
    assert alarm["Namespace"] == "AWS/ApiGateway" and alarm["ExtendedStatistic"] == "p99"
    dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
    stage = resources["HttpApiStage"]["Properties"]
    assert dims["ApiId"] == {"Ref": "HttpApi"} and dims["Stage"] == stage["StageName"] == "$default"
    assert (dims["Resource"], dims["Method"]) == ("/v1/jobs", "POST")
    assert alarm["Threshold"] == {"Ref": "ApiLatencyP99AlarmMs"} and "ApiLatencyP99AlarmMs" in template["Parameters"]
    # Route metrics exist only for a route of its own with detailed metrics on (not for `$default`'s paths).
    route_keys = {r["Properties"]["RouteKey"] for r in of_type(resources, "AWS::ApiGatewayV2::Route").values()}
    assert "POST /v1/jobs" in route_keys and stage["RouteSettings"]["POST /v1/jobs"]["DetailedMetricsEnabled"]
    assert "HttpApiSubmitRoute" in resources["HttpApiStage"]["DependsOn"]  # route settings name an existing route


def test_api_5xx_alarm_watches_the_http_api_stage(resources: dict[str, Any]) -> None:
    alarm = resources["ApiServerErrorsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/ApiGateway", "5xx")
    assert alarm["Dimensions"] == [
        {"Name": "ApiId", "Value": {"Ref": "HttpApi"}},
        {"Name": "Stage", "Value": "$default"},
    ]


def test_api_stage_writes_json_access_logs_without_credentials(resources: dict[str, Any]) -> None:
    stage = resources["HttpApiStage"]["Properties"]
    setting = stage["AccessLogSettings"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    fields = json.loads(setting["Format"])  # one JSON object per request
    expected = {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "route": "$context.routeKey",
        "path": "$context.path",
        "status": "$context.status",
        "latency": "$context.responseLatency",
    }
    assert expected.items() <= fields.items()
    assert not any(word in setting["Format"].lower() for word in ("authorization", "api-key", "apikey", "header"))
    group = resources["ApiAccessLogGroup"]
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert (group["DeletionPolicy"], group["UpdateReplacePolicy"]) == ("Delete", "Delete")


def test_the_api_is_an_http_api_and_needs_no_account_logging_role(resources: dict, template: dict) -> None:
    """An HTTP API ($1.00 per million requests, a REST API $3.50) writes access logs through CloudWatch Logs'
    log delivery: no region-wide API Gateway account setting, no role for it. Chalice's REST API is gone."""
    (api,) = [
        a for a in of_type(resources, "AWS::ApiGatewayV2::Api").values() if a["Properties"]["ProtocolType"] == "HTTP"
    ]
    assert api["Properties"]["Name"] == {"Fn::Sub": "code-runner-${Stage}"}
    assert not of_type(resources, "AWS::Serverless::Api") and not of_type(resources, "AWS::ApiGateway::RestApi")
    assert (
        not of_type(resources, "AWS::ApiGateway::Account")
        and "ApiGatewayCloudWatchRoleArn" not in template["Parameters"]
    )
    assert not of_type(resources, "AWS::WAFv2::WebACLAssociation")  # WAF cannot be associated with an HTTP API
    stage = resources["HttpApiStage"]["Properties"]
    assert stage["ApiId"] == {"Ref": "HttpApi"} and stage["AutoDeploy"] is True
    permission = resources["APIHandlerInvokePermission"]["Properties"]
    assert "${HttpApi}/*" in permission["SourceArn"]["Fn::Sub"] and permission["FunctionName"] == {"Ref": "APIHandler"}
    assert "RestAPIId" not in template["Outputs"]
    assert "https://${HttpApi}.execute-api." in template["Outputs"]["EndpointURL"]["Value"]["Fn::Sub"]


def test_api_stage_is_throttled_by_parameters(resources: dict[str, Any], template: dict[str, Any]) -> None:
    stage = resources["HttpApiStage"]["Properties"]
    # A route's own settings replace the stage's defaults: each carries the limits.
    for setting in (stage["DefaultRouteSettings"], *stage["RouteSettings"].values()):
        assert setting["ThrottlingRateLimit"] == {"Ref": "ApiThrottleRateLimit"}
        assert setting["ThrottlingBurstLimit"] == {"Ref": "ApiThrottleBurstLimit"}
    for name in ("ApiThrottleRateLimit", "ApiThrottleBurstLimit"):
        assert template["Parameters"][name]["Type"] == "Number" and template["Parameters"][name]["Default"] > 0


def test_stateful_resources_outlive_the_stack(resources: dict[str, Any]) -> None:
    tables = of_type(resources, "AWS::DynamoDB::Table")
    assert set(TABLES.values()) <= set(tables)
    for logical_id, spec in {**tables, **of_type(resources, "AWS::S3::Bucket")}.items():
        assert (spec["DeletionPolicy"], spec["UpdateReplacePolicy"]) == ("Retain", "Retain"), logical_id
    for logical_id, spec in tables.items():
        assert spec["Properties"]["DeletionProtectionEnabled"] is True, logical_id
    # Queues and log groups say what happens to them (jobs in flight and logs with a retention: deleted).
    for type_ in ("AWS::SQS::Queue", "AWS::Logs::LogGroup"):
        for logical_id, spec in of_type(resources, type_).items():
            assert spec["DeletionPolicy"] == "Delete", logical_id


# --- issue 9: the Fargate task's network ---------------------------------------------------------------


def test_fargate_tasks_reach_only_the_endpoints_and_s3(resources: dict[str, Any], template: dict[str, Any]) -> None:
    group = resources["FargateTaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group
    egress = list(group["SecurityGroupEgress"])
    egress += [
        spec["Properties"]
        for spec in of_type(resources, "AWS::EC2::SecurityGroupEgress").values()
        if spec["Properties"]["GroupId"] == {"Fn::GetAtt": ["FargateTaskSecurityGroup", "GroupId"]}
    ]
    destinations = []
    for rule in egress:
        assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 443, 443)
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, "no address range: 0.0.0.0/0 was the hole"
        destinations.append(rule.get("DestinationPrefixListId") or rule["DestinationSecurityGroupId"])
    assert sorted(map(json.dumps, destinations)) == sorted(
        map(json.dumps, [{"Ref": "S3PrefixListId"}, {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]}])
    )
    assert "Default" not in template["Parameters"]["S3PrefixListId"]  # looked up per region by make deploy
    # The endpoints admit the tasks, and every interface endpoint sits behind that group.
    ingress = resources["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert [r["SourceSecurityGroupId"] for r in ingress] == [{"Fn::GetAtt": ["FargateTaskSecurityGroup", "GroupId"]}]
    for spec in of_type(resources, "AWS::EC2::VPCEndpoint").values():
        if spec["Properties"]["VpcEndpointType"] == "Interface":
            assert spec["Properties"]["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]


THIS_ACCOUNT = {"StringEquals": {"aws:PrincipalAccount": {"Ref": "AWS::AccountId"}}}


def test_vpc_endpoints_admit_only_this_accounts_principals(resources: dict[str, Any]) -> None:
    endpoints = of_type(resources, "AWS::EC2::VPCEndpoint")
    interfaces = [e for e in endpoints.values() if e["Properties"]["VpcEndpointType"] == "Interface"]
    services = {e["Properties"]["ServiceName"]["Fn::Sub"].rsplit(".", 1)[-1] for e in interfaces}
    assert services >= {"api", "dkr", "logs"}
    for endpoint in interfaces:
        for statement in endpoint["Properties"]["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow" and statement["Condition"] == THIS_ACCOUNT
    (gateway,) = [e["Properties"] for e in endpoints.values() if e["Properties"]["VpcEndpointType"] == "Gateway"]
    by_resource = {json.dumps(s["Resource"]): s for s in gateway["PolicyDocument"]["Statement"]}
    artifacts = by_resource[json.dumps({"Fn::Sub": "${ArtifactsBucket.Arn}/*"})]
    assert artifacts["Condition"] == THIS_ACCOUNT
    # ECR serves image layers from its own bucket by URLs it signs itself: no principal condition, or pulls fail.
    layers = by_resource[
        json.dumps({"Fn::Sub": "arn:${AWS::Partition}:s3:::prod-${AWS::Region}-starport-layer-bucket/*"})
    ]
    assert _listed(layers["Action"]) == ["s3:GetObject"] and "Condition" not in layers
    assert len(by_resource) == 2
