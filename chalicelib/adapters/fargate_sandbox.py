"""The Fargate sandbox: long or large jobs as ECS tasks; request and result travel by presigned S3 URL.

The task has no role, so it cannot reach anything but the two presigned objects. The result arrives
through an EventBridge "ECS Task State Change" rule (see `parse_task_state_change`) and `fetch_result`.
"""

from __future__ import annotations

from typing import Any

from chalicelib.adapters.aws import LazyClient
from chalicelib.domain.errors import BackendRejected, PlatformFault
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SandboxUnavailable
from chalicelib.services.ports import TaskStopped

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
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=self._key(job_id, "request.json"), Body=request.model_dump_json()
            )
            environment = [
                {"name": "SANDBOX_JOB_ID", "value": job_id},
                {"name": "SANDBOX_REQUEST_URL", "value": self._presign("get_object", job_id, "request.json")},
                {"name": "SANDBOX_RESULT_URL", "value": self._presign("put_object", job_id, "result.json")},
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

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        """The uploaded result, or None when the task did not upload one."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(job_id, "result.json"))["Body"].read()
        except BackendRejected as exc:
            if exc.aws_code in ("NoSuchKey", "404"):
                return None
            raise SandboxUnavailable(f"fargate result unreadable: {exc}") from exc
        return ExecutionResult.model_validate_json(body).model_copy(update={"sandbox": "fargate"})

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
