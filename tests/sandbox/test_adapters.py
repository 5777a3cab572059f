"""The Lambda adapter against botocore's Stubber, the Fargate adapter against moto (ECS + S3).

Both accept only an answer sealed with the run's key (chalicelib/sandbox/integrity.py); the key is fixed here
so the stubbed answers can be sealed with it.
"""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber
from conftest import SMALL
from moto import mock_aws

from chalicelib.adapters.fargate_sandbox import FargateSandbox, parse_task_state_change
from chalicelib.adapters.lambda_sandbox import LambdaSandbox
from chalicelib.domain.errors import DependencyThrottled, DependencyUnavailable
from chalicelib.sandbox import integrity
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    ResultRejected,
    SandboxRefused,
    SandboxUnavailable,
    SourceFile,
)
from chalicelib.sandbox.runtimes import UnknownRuntime
from chalicelib.sandbox.selection import memory_class

REQUEST = ExecutionRequest(
    job_id="job-123", runtime="python3", files=[SourceFile(path="main.py", content="print(1)")], limits=SMALL
)
KEY = "ab" * integrity.KEY_BYTES
pytestmark = [pytest.mark.usefixtures("fake_aws", "fixed_key"), pytest.mark.xdist_group("sandbox")]


@pytest.fixture
def fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(integrity, "new_key", lambda: KEY)


@pytest.fixture
def lambda_client() -> Any:
    return boto3.client("lambda", region_name="us-east-1")


def _invoke_params() -> dict[str, Any]:
    return {
        "FunctionName": f"sandbox_{memory_class(SMALL.memory_mb)}",
        "InvocationType": "RequestResponse",
        "Payload": json.dumps({"request": REQUEST.model_dump(mode="json"), "key": KEY}).encode(),
    }


def _sealed(kind: Any, body: str, key: str = KEY, job_id: str = "job-123") -> dict[str, str]:
    return integrity.seal(key, kind, job_id, body)


def _payload(body: object) -> Any:
    from botocore.response import StreamingBody

    raw = json.dumps(body).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


def test_lambda_success(lambda_client: Any) -> None:
    result = ExecutionResult(exit_code=0, stdout="1\n", sandbox="lambda").model_dump_json()
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke", {"StatusCode": 200, "Payload": _payload(_sealed("result", result))}, _invoke_params()
        )
        got = LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)
    assert (got.stdout, got.sandbox) == ("1\n", "lambda")


def test_lambda_invokes_the_smallest_memory_class_that_holds_the_job(lambda_client: Any) -> None:
    sandbox = LambdaSandbox("code-runner-prod-sandbox", client=lambda_client)
    small = REQUEST.model_copy(update={"limits": SMALL.model_copy(update={"memory_mb": 128})})
    big = REQUEST.model_copy(update={"limits": SMALL.model_copy(update={"memory_mb": 3008})})
    assert sandbox.function_for(small.limits.memory_mb) == "code-runner-prod-sandbox_1769"
    assert sandbox.function_for(big.limits.memory_mb) == "code-runner-prod-sandbox_3136"
    huge = REQUEST.model_copy(update={"limits": SMALL.model_copy(update={"memory_mb": 9000})})
    with pytest.raises(SandboxUnavailable):
        sandbox.function_for(huge.limits.memory_mb)


@pytest.mark.parametrize(
    "answer",
    [
        ExecutionResult(exit_code=0, stdout="all accepted").model_dump(mode="json"),  # unsealed, as before
        _sealed("result", ExecutionResult(stdout="x").model_dump_json(), key="cd" * 32),  # another key
        _sealed("result", ExecutionResult(stdout="x").model_dump_json(), job_id="job-999"),  # another job's
        {**_sealed("result", ExecutionResult(stdout="x").model_dump_json()), "body": '{"stdout": "forged"}'},
        "not json at all",
    ],
    ids=["unsealed", "wrong-key", "other-job", "tampered", "garbage"],
)
def test_lambda_rejects_an_answer_without_a_valid_seal(lambda_client: Any, answer: Any) -> None:
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": _payload(answer)})
        with pytest.raises(ResultRejected):
            LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


def test_lambda_sealed_refusal_is_typed_and_remembered(lambda_client: Any) -> None:
    refusal = _sealed("refusal", json.dumps({"reason": "no layer can cut the network", "layers": {}}))
    sandbox = LambdaSandbox("sandbox", client=lambda_client)
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": _payload(refusal)})
        with pytest.raises(SandboxRefused, match="no layer can cut the network") as refused:
            sandbox.run(REQUEST)
    assert refused.value.sandbox == "lambda"
    offer = sandbox.offer()  # no second invoke: the refusal is what the function offers for now
    assert offer.refusal == "no layer can cut the network" and not offer.usable


def test_lambda_offer_is_probed_once_and_sealed(lambda_client: Any) -> None:
    from chalicelib.sandbox.models import SandboxOffer

    offered = SandboxOffer(sandbox="lambda", runtimes={"node": "v18.19.0"}, layers={"seccomp": True})
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": _payload(_sealed("offer", offered.model_dump_json(), job_id="probe"))},
            {"FunctionName": "sandbox_1769", "InvocationType": "RequestResponse",
             "Payload": json.dumps({"probe": True, "key": KEY}).encode()},
        )  # fmt: skip
        sandbox = LambdaSandbox("sandbox", client=lambda_client)
        assert sandbox.offer() == offered and sandbox.offer() == offered  # the second from the cache


def test_lambda_throttle_is_a_throttled_dependency(lambda_client: Any) -> None:
    with Stubber(lambda_client) as stub:
        stub.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
        with pytest.raises(DependencyThrottled, match="TooManyRequestsException"):
            LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


def test_lambda_function_error_is_unavailable(lambda_client: Any) -> None:
    error = {"errorType": "Runtime.ExitError", "errorMessage": "killed"}
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _payload(error)})
        with pytest.raises(SandboxUnavailable, match="Runtime.ExitError"):
            LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


def test_lambda_rejected_request_is_not_retryable(lambda_client: Any) -> None:
    error = {"errorType": "UnknownRuntime", "errorMessage": "runtime 'cobol' is not available"}
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": _payload(error)})
        with pytest.raises(UnknownRuntime):
            LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


def test_lambda_missing_function_is_sandbox_unavailable(lambda_client: Any) -> None:
    with Stubber(lambda_client) as stub:
        stub.add_client_error("invoke", "ResourceNotFoundException", "Function not found", 404)
        with pytest.raises(SandboxUnavailable, match="ResourceNotFoundException"):
            LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


def test_lambda_read_timeout_is_unavailable(lambda_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout(**_: Any) -> Any:
        raise ReadTimeoutError(endpoint_url="https://lambda.us-east-1.amazonaws.com")

    monkeypatch.setattr(lambda_client, "invoke", timeout)
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        LambdaSandbox("sandbox", client=lambda_client).run(REQUEST)


@pytest.fixture
def fargate() -> Any:
    with mock_aws():
        ecs = boto3.client("ecs", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="sandbox-bucket")
        ecs.create_cluster(clusterName="sandbox")
        ecs.register_task_definition(
            family="sandbox",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            # moto sums per-container memory to place the task: without it run_task raises TypeError.
            containerDefinitions=[
                {"name": "sandbox", "image": "sandbox", "memory": 512, "readonlyRootFilesystem": True}
            ],
        )
        # moto checks the awsvpc subnet exists in its EC2 backend, and its task ENI needs a private DNS
        # name, which moto only sets when the VPC has DNS hostnames on (getmoto/moto#9089, #9179).
        ec2 = boto3.client("ec2", region_name="us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        group = ec2.create_security_group(GroupName="sandbox", Description="no egress", VpcId=vpc)["GroupId"]
        yield FargateSandbox("sandbox", "sandbox", [subnet], [group], "sandbox-bucket", client=ecs, s3_client=s3)


def test_fargate_launch_passes_the_request_by_reference(fargate: FargateSandbox) -> None:
    arn = fargate.launch(REQUEST)
    task = fargate.ecs.describe_tasks(cluster="sandbox", tasks=[arn])["tasks"][0]
    assert task["startedBy"] == "job-123"
    env = {v["name"]: v["value"] for v in task["overrides"]["containerOverrides"][0]["environment"]}
    assert env["SANDBOX_JOB_ID"] == "job-123"
    assert env["SANDBOX_RESULT_KEY"] == KEY  # the worker's copy is beside the request, out of the task's reach
    assert (
        fargate.s3.get_object(Bucket="sandbox-bucket", Key="sandbox/job-123/result.key")["Body"].read() == KEY.encode()
    )
    assert "request.json" in env["SANDBOX_REQUEST_URL"] and "Signature" in env["SANDBOX_REQUEST_URL"]
    assert "result.json" in env["SANDBOX_RESULT_URL"]
    stored = fargate.s3.get_object(Bucket="sandbox-bucket", Key="sandbox/job-123/request.json")["Body"].read()
    assert ExecutionRequest.model_validate_json(stored) == REQUEST


def test_fargate_result_roundtrip_and_stop(fargate: FargateSandbox) -> None:
    assert fargate.fetch_result("job-123") is None
    arn = fargate.launch(REQUEST)
    result = ExecutionResult(exit_code=0, stdout="1\n")
    body = json.dumps(_sealed("result", result.model_dump_json()))
    fargate.s3.put_object(Bucket="sandbox-bucket", Key="sandbox/job-123/result.json", Body=body)
    fetched = fargate.fetch_result("job-123")
    assert fetched is not None and (fetched.stdout, fetched.sandbox) == ("1\n", "fargate")
    fargate.stop(arn, "deadline passed")
    task = fargate.ecs.describe_tasks(cluster="sandbox", tasks=[arn])["tasks"][0]
    assert task["desiredStatus"] == "STOPPED"


def test_fargate_rejects_a_result_the_job_uploaded_itself(fargate: FargateSandbox) -> None:
    fargate.launch(REQUEST)
    forged = ExecutionResult(exit_code=0, stdout="all accepted").model_dump_json()
    for body in (forged, json.dumps(_sealed("result", forged, key="cd" * 32))):
        fargate.s3.put_object(Bucket="sandbox-bucket", Key="sandbox/job-123/result.json", Body=body)
        with pytest.raises(ResultRejected):
            fargate.fetch_result("job-123")


def test_fargate_sealed_refusal_is_typed(fargate: FargateSandbox) -> None:
    fargate.launch(REQUEST)
    body = json.dumps(_sealed("refusal", json.dumps({"reason": "cannot be non-dumpable"})))
    fargate.s3.put_object(Bucket="sandbox-bucket", Key="sandbox/job-123/result.json", Body=body)
    with pytest.raises(SandboxRefused, match="cannot be non-dumpable"):
        fargate.fetch_result("job-123")


def test_fargate_launch_failure_is_unavailable(fargate: FargateSandbox) -> None:
    broken = FargateSandbox(
        "missing", "sandbox", ["s"], ["g"], "sandbox-bucket", client=fargate.ecs, s3_client=fargate.s3
    )
    with pytest.raises(SandboxUnavailable):
        broken.launch(REQUEST)


def test_presigned_urls_work_for_the_container(
    fargate: FargateSandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The container's GET and PUT go through the URLs alone (no credentials in the task)."""
    from chalicelib.sandbox import fargate_entry

    fargate.launch(REQUEST)
    task = fargate.ecs.list_tasks(cluster="sandbox")["taskArns"][0]
    overrides = fargate.ecs.describe_tasks(cluster="sandbox", tasks=[task])["tasks"][0]["overrides"]
    env = {v["name"]: v["value"] for v in overrides["containerOverrides"][0]["environment"]}

    import requests  # moto intercepts `requests`/botocore, not urllib: route the entry's I/O through it

    def fake_urlopen(req: Any, timeout: float = 0) -> Any:
        if isinstance(req, urllib.request.Request):
            response = requests.put(req.full_url, data=req.data, timeout=timeout)
            response.raise_for_status()
            return io.BytesIO(b"")
        response = requests.get(req, timeout=timeout)
        response.raise_for_status()
        return io.BytesIO(response.content)

    monkeypatch.setattr(fargate_entry.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(
        fargate_entry, "execute", lambda request, isolation: ExecutionResult(stdout="ran " + request.job_id)
    )
    assert (
        fargate_entry.run(
            {
                "SANDBOX_REQUEST_URL": env["SANDBOX_REQUEST_URL"],
                "SANDBOX_RESULT_URL": env["SANDBOX_RESULT_URL"],
                "SANDBOX_RESULT_KEY": env["SANDBOX_RESULT_KEY"],
                "SANDBOX_WORK_ROOT": str(tmp_path / "work"),
            }
        )
        == 0
    )
    fetched = fargate.fetch_result("job-123")
    assert fetched is not None and fetched.stdout == "ran job-123"


def _event(last_status: str, exit_code: int | None = 0) -> dict[str, Any]:
    return {
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "detail": {
            "taskArn": "arn:aws:ecs:us-east-1:123456789012:task/sandbox/abc",
            "lastStatus": last_status,
            "startedBy": "job-123",
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "sandbox", "exitCode": exit_code}],
        },
    }


def test_parse_task_state_change() -> None:
    stopped = parse_task_state_change(_event("STOPPED", 0))
    assert stopped is not None
    assert (stopped.job_id, stopped.exit_code) == ("job-123", 0)
    assert stopped.stopped_reason == "Essential container in task exited"
    assert parse_task_state_change(_event("RUNNING")) is None
    assert parse_task_state_change({"detail-type": "Something else"}) is None
    assert parse_task_state_change(_event("STOPPED", None)).exit_code is None  # type: ignore[union-attr]
