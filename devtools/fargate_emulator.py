"""A local Fargate: the tasks moto's ECS `RunTask` records are started for real, and their end is delivered as
EventBridge delivers an "ECS Task State Change" event.

moto records a task and runs nothing. This watcher polls moto's ECS (`ListTasks`, which does not advance
moto's task states) for new RUNNING tasks of the cluster and, for each, starts the task's entry point
(`python -m chalicelib.sandbox.fargate_entry`, the image's ENTRYPOINT) as a container of its own
(devtools/sandbox_host.py): as a non-root uid of its own (the image's user is 10001; here each task gets a
leased uid so concurrent tasks cannot touch each other, as separate Fargate tasks cannot), with the container's
environment (the image's ENV plus the task's overrides: the job by reference, presigned S3 URLs on moto, and
the result key), no task credentials, its own /tmp, the task's memory, no user namespaces. The entry writes the
result where it would in AWS (the presigned PUT). When the entry exits, or when something stops the task
(the reaper's `StopTask`), the task is stopped in moto and `deliver` receives the state-change event with its
real shape (`detail`: taskArn, clusterArn, group, startedBy, overrides, containers with exitCode, stopCode,
stoppedReason, ...), as the `fargate_done` rule would pass it.

Hooked from outside moto (a thread with an ECS client), so it works whichever process serves moto's ECS.
Not emulated: pulling the image, the task's network (awsvpc ENI, security group, VPC endpoints), Fargate's
own kernel and seccomp profile, the ECS agent and the task metadata endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from devtools.sandbox_host import SYSTEM_PYTHON, Container, Host, UidLease

log = logging.getLogger("coderunner.fargate_emulator")

CONTAINER_NAME = "sandbox"  # the task definition's container (chalicelib/adapters/fargate_sandbox.py)
# The image's ENV (infra/sandbox/Dockerfile) and what ECS adds to every Fargate container.
IMAGE_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "SANDBOX_WORK_ROOT": "/tmp/code-runner-work",
    "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class FargateConfig:
    cluster: str
    memory_mb: int = 4096  # the task definition's memory
    uid_first: int = 64650
    uid_count: int = 50
    deny_prctl: list[str] = field(default_factory=list)
    poll_s: float = 0.25


@dataclass
class RunningTask:
    arn: str
    described: dict[str, Any]
    container: Container
    started_at: datetime
    stop_reason: str | None = None  # set when someone else stopped it (StopTask)
    out_of_memory: bool = False


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _environment(task: dict[str, Any]) -> dict[str, str]:
    env = dict(IMAGE_ENVIRONMENT)
    for override in (task.get("overrides") or {}).get("containerOverrides") or []:
        if override.get("name") == CONTAINER_NAME:
            env.update({v["name"]: v["value"] for v in override.get("environment") or []})
    env["ECS_CONTAINER_METADATA_URI_V4"] = f"http://169.254.170.2/v4/{task['taskArn'].rsplit('/', 1)[-1]}"
    return env


class FargateEmulator:
    """Runs the tasks of one cluster; `deliver(event)` is called once per task when it stops."""

    def __init__(self, ecs: Any, config: FargateConfig, deliver: Callable[[dict[str, Any]], Any], host: Host) -> None:
        self.ecs, self.config, self.deliver, self.host = ecs, config, deliver, host
        self.seen: set[str] = set()
        self.running: dict[str, RunningTask] = {}
        self.events: list[dict[str, Any]] = []  # every event delivered (tests read them)
        self.uids_used: set[int] = set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="fargate-emulator", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        with self.lock:
            tasks = list(self.running.values())
        for task in tasks:
            task.container.stop()

    def _loop(self) -> None:
        while not self.stopping.wait(self.config.poll_s):
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - the watcher survives a failed poll (moto restarting, ...)
                log.exception("fargate emulator poll failed")

    def _arns(self, status: str) -> set[str]:
        found: set[str] = set()
        paginator = self.ecs.get_paginator("list_tasks")
        for page in paginator.paginate(cluster=self.config.cluster, desiredStatus=status):
            found.update(page.get("taskArns", []))
        return found

    def _poll(self) -> None:
        new = self._arns("RUNNING") - self.seen
        if new:
            self.seen |= new
            described = self.ecs.describe_tasks(cluster=self.config.cluster, tasks=sorted(new))["tasks"]
            for task in described:
                threading.Thread(target=self._run, args=(task,), name="fargate-task", daemon=True).start()
        with self.lock:
            mine = set(self.running)
        for arn in mine & self._arns("STOPPED"):  # StopTask by the platform (the reaper, a cancel)
            with self.lock:
                task = self.running.get(arn)
            if task is not None and task.stop_reason is None:
                described = self.ecs.describe_tasks(cluster=self.config.cluster, tasks=[arn])["tasks"]
                task.stop_reason = (described[0].get("stoppedReason") if described else "") or "Task stopped"
                task.container.stop()

    def _run(self, task: dict[str, Any]) -> None:
        arn = task["taskArn"]
        lease = UidLease(self.config.uid_first, self.config.uid_count)
        self.uids_used.add(lease.uid)
        name = f"fargate-{lease.uid}"
        container = Container(self.host, name, lease, self.config.memory_mb, self.config.deny_prctl)
        running = RunningTask(arn, task, container, datetime.now(UTC))
        with self.lock:
            self.running[arn] = running
        try:
            argv = [SYSTEM_PYTHON, "-m", "chalicelib.sandbox.fargate_entry"]
            proc = container.start(argv, _environment(task), str(self.host.code))
            exit_code = proc.wait()
            running.out_of_memory = container.memory_hit()
        finally:
            container.stop()
            with self.lock:
                self.running.pop(arn, None)
        self._finish(running, exit_code)

    def _finish(self, task: RunningTask, exit_code: int) -> None:
        reason, stop_code = task.stop_reason, "UserInitiated"
        if reason is None:
            reason, stop_code = "Essential container in task exited", "EssentialContainerExited"
            if task.out_of_memory:
                reason = "OutOfMemoryError: Container killed due to memory usage"
            with contextlib.suppress(Exception):  # already stopped: fine
                self.ecs.stop_task(cluster=self.config.cluster, task=task.arn, reason=reason)
        event = self.event(task, exit_code if exit_code >= 0 else 128 - exit_code, reason, stop_code)
        self.events.append(event)
        try:
            self.deliver(event)
        except Exception:  # noqa: BLE001 - like a failed rule target: logged (EventBridge would retry)
            log.exception("delivering the task state change failed")

    def event(self, task: RunningTask, exit_code: int, reason: str, stop_code: str) -> dict[str, Any]:
        """The EventBridge "ECS Task State Change" event of a stopped task."""
        described, now = task.described, datetime.now(UTC)
        container: dict[str, Any] = next(iter(described.get("containers") or []), {})
        detail = {
            "attachments": described.get("attachments", []),
            "availabilityZone": "us-east-1a",
            "clusterArn": described.get("clusterArn"),
            "containers": [
                {
                    "containerArn": container.get("containerArn", f"{task.arn}/container"),
                    "exitCode": exit_code,
                    "lastStatus": "STOPPED",
                    "name": CONTAINER_NAME,
                    "taskArn": task.arn,
                }
            ],
            "createdAt": _iso(described.get("createdAt")) or task.started_at.isoformat(),
            "launchType": described.get("launchType", "FARGATE"),
            "cpu": described.get("cpu"),
            "memory": described.get("memory"),
            "desiredStatus": "STOPPED",
            "group": described.get("group"),
            "lastStatus": "STOPPED",
            "overrides": described.get("overrides", {}),
            "startedAt": task.started_at.isoformat(),
            "startedBy": described.get("startedBy"),
            "stopCode": stop_code,
            "stoppedAt": now.isoformat(),
            "stoppedReason": reason,
            "stoppingAt": now.isoformat(),
            "taskArn": task.arn,
            "taskDefinitionArn": described.get("taskDefinitionArn"),
            "updatedAt": now.isoformat(),
            "version": 4,
        }
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "ECS Task State Change",
            "source": "aws.ecs",
            "account": task.arn.split(":")[4],
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": task.arn.split(":")[3],
            "resources": [task.arn],
            "detail": detail,
        }


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge's pattern matching for the patterns we use: each key lists the values it accepts, nested
    objects match nested objects."""
    for key, wanted in pattern.items():
        value = event.get(key)
        if isinstance(wanted, dict):
            if not isinstance(value, dict) or not matches(wanted, value):
                return False
        elif value not in wanted:
            return False
    return True


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s} s")
        time.sleep(0.05)
