"""The Fargate sandbox: long or large jobs as ECS tasks; request and result travel by presigned S3 URL.

The task has no role, so it cannot reach anything but the two presigned objects. The result arrives
through an EventBridge "ECS Task State Change" rule (see `parse_task_state_change`) and `fetch_result`.

Each launch carries a fresh key in the task's overrides (the entry drops it before any user code runs) and
keeps a copy in the bucket beside the request, where the task cannot read it (no presigned URL names it).
`fetch_result` accepts only a result sealed with that key (chalicelib/sandbox/integrity.py): one the job
uploaded itself through a hole raises `ResultRejected`; a sealed refusal raises `SandboxRefused`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from chalicelib.adapters.aws import LazyClient
from chalicelib.domain.errors import BackendRejected, PlatformFault
from chalicelib.sandbox import integrity, runtimes
from chalicelib.sandbox.models import (
    ExecutionRequest,
    ExecutionResult,
    SandboxOffer,
    SandboxRefused,
    SandboxUnavailable,
)
from chalicelib.services.ports import TaskStopped


class _Offers(Protocol):
    def offer(self) -> SandboxOffer: ...


CONTAINER_NAME = "sandbox"
_STARTED_BY_MAX = 36  # ECS limit on startedBy


class FargateSandbox:
    """Launches, stops and collects Fargate sandbox tasks."""

    def __init__(
        self,
        cluster: str,
        task_definition: str,
        subnets: list[str],
        security_groups: list[str],
        bucket: str,
        client: Any = None,
        s3_client: Any = None,
        prefix: str = "sandbox/",
        url_ttl_s: int = 3600,
        image_twin: _Offers | None = None,
    ) -> None:
        self.cluster = cluster
        self.task_definition = task_definition
        self.subnets = subnets
        self.security_groups = security_groups
        self.bucket = bucket
        self.prefix = prefix
        self.url_ttl_s = url_ttl_s
        self._ecs = client
        self._s3 = s3_client
        self.image_twin = image_twin  # the Lambda sandbox: the same image, so the same runtimes

    ecs = LazyClient("ecs", attr="_ecs")
    s3 = LazyClient("s3", attr="_s3")

    def _key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}{job_id}/{name}"

    def _presign(self, method: str, job_id: str, name: str) -> str:
        params = {"Bucket": self.bucket, "Key": self._key(job_id, name)}
        return str(self.s3.generate_presigned_url(method, Params=params, ExpiresIn=self.url_ttl_s))

    def launch(self, request: ExecutionRequest) -> str:
        """Store the request, start the task; returns its ARN. Raises SandboxUnavailable on any failure."""
        job_id = request.job_id
        key = integrity.new_key()
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=self._key(job_id, "request.json"), Body=request.model_dump_json()
            )
            self.s3.put_object(Bucket=self.bucket, Key=self._key(job_id, "result.key"), Body=key.encode())
            environment = [
                {"name": "SANDBOX_JOB_ID", "value": job_id},
                {"name": "SANDBOX_REQUEST_URL", "value": self._presign("get_object", job_id, "request.json")},
                {"name": "SANDBOX_RESULT_URL", "value": self._presign("put_object", job_id, "result.json")},
                {"name": "SANDBOX_RESULT_KEY", "value": key},
            ]
            response = self.ecs.run_task(
                cluster=self.cluster,
                taskDefinition=self.task_definition,
                launchType="FARGATE",
                count=1,
                startedBy=job_id[:_STARTED_BY_MAX],
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": self.subnets,
                        "securityGroups": self.security_groups,
                        "assignPublicIp": "DISABLED",
                    }
                },
                overrides={"containerOverrides": [{"name": CONTAINER_NAME, "environment": environment}]},
                tags=[{"key": "job_id", "value": job_id}],
            )
        except (PlatformFault, BackendRejected) as exc:
            raise SandboxUnavailable(f"fargate sandbox launch failed: {exc}") from exc
        tasks = response.get("tasks") or []
        if not tasks:
            failures = response.get("failures") or [{"reason": "no task started"}]
            raise SandboxUnavailable(f"fargate sandbox launch failed: {failures[0].get('reason')}")
        return str(tasks[0]["taskArn"])

    def _read(self, job_id: str, name: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self._key(job_id, name))["Body"].read()
        except BackendRejected as exc:
            if exc.aws_code in ("NoSuchKey", "404"):
                return None
            raise SandboxUnavailable(f"fargate {name} unreadable: {exc}") from exc
        return body

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        """The uploaded result, or None when the task did not upload one. ResultRejected when it is not sealed
        with the launch's key; SandboxRefused when the task refused to run user code."""
        body = self._read(job_id, "result.json")
        if body is None:
            return None
        key = self._read(job_id, "result.key")
        if key is None:
            raise SandboxUnavailable(f"the key of job {job_id}'s fargate result is gone")
        sealed = integrity.open_sealed(body, key.decode(), job_id)
        if sealed.kind == "refusal":
            raise SandboxRefused("fargate", str(json.loads(sealed.body).get("reason", "no reason given")))
        if sealed.kind != "result":
            raise SandboxUnavailable(f"the fargate sandbox answered a job with a sealed {sealed.kind}")
        return ExecutionResult.model_validate_json(sealed.body).model_copy(update={"sandbox": "fargate"})

    def offer(self) -> SandboxOffer:
        """The runtimes of the sandbox image: the Lambda function runs the same image and is probed for them
        (without it, every registered runtime, as the image installs them); the layers are a task's own,
        probed in each task (a task that cannot keep a guarantee answers with a refusal)."""
        twin = self.image_twin.offer() if self.image_twin is not None else None
        if twin is not None and twin.reachable and twin.runtimes:
            found, tools, source = twin.runtimes, twin.tools, "the sandbox image, as the Lambda function reports it"
        else:
            found = {info.name: "pinned in the sandbox image" for info in runtimes.list_runtimes()}
            tools = {info.name: "pinned in the sandbox image" for info in runtimes.list_tools()}
            source = "declared by the sandbox image"
        return SandboxOffer(sandbox="fargate", runtimes=found, tools=tools, source=source + "; layers: per task")

    def stop(self, task_arn: str, reason: str) -> None:
        """Stop a task (the reaper calls this past the deadline); an already stopped task is fine."""
        try:
            self.ecs.stop_task(cluster=self.cluster, task=task_arn, reason=reason[:255])
        except BackendRejected as exc:
            if exc.aws_code != "InvalidParameterException":  # ECS's answer for a task that already stopped
                raise SandboxUnavailable(f"fargate stop failed: {exc}") from exc

    def stopped(self, event: dict[str, Any]) -> TaskStopped | None:
        return parse_task_state_change(event)


def parse_task_state_change(event: dict[str, Any]) -> TaskStopped | None:
    """A TaskStopped from an EventBridge "ECS Task State Change" event, or None for anything else."""
    if event.get("detail-type") != "ECS Task State Change":
        return None
    detail = event.get("detail") or {}
    if detail.get("lastStatus") != "STOPPED":
        return None
    job_id = detail.get("startedBy") or _job_id_from_overrides(detail)
    if not job_id:
        return None
    containers = [c for c in detail.get("containers") or [] if c.get("name") == CONTAINER_NAME]
    exit_code = containers[0].get("exitCode") if containers else None
    return TaskStopped(
        job_id=str(job_id),
        task_arn=str(detail.get("taskArn", "")),
        exit_code=int(exit_code) if exit_code is not None else None,
        stopped_reason=str(detail.get("stoppedReason", "")),
    )


def _job_id_from_overrides(detail: dict[str, Any]) -> str | None:
    for override in (detail.get("overrides") or {}).get("containerOverrides") or []:
        for variable in override.get("environment") or []:
            if variable.get("name") == "SANDBOX_JOB_ID":
                return str(variable.get("value"))
    return None
