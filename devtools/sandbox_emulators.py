"""The cloud sandboxes in the local stack: the Lambda emulator and the Fargate emulator, wired like AWS.

`start_emulators(stage, ...)` creates, on the stack's moto server, what the template creates for the Fargate
sandbox (the artifacts bucket, the cluster, the task definition, a subnet and a security group for awsvpc),
starts both emulators on one copy of the sandbox image, and returns the environment the API and the workers
need (`CODERUNNER_SANDBOX_FUNCTION`, `AWS_ENDPOINT_URL_LAMBDA`, `CODERUNNER_FARGATE_*`,
`CODERUNNER_ARTIFACTS_BUCKET`): from then on the stage offers `"sandbox": "lambda"` and `"fargate"` through
the same adapters as the cloud. The Fargate emulator delivers each task's end to `deliver` (the stack passes
the app's `fargate_done` handler, behind its EventBridge pattern).

`CODERUNNER_EMULATE_DENY_PRCTL=PR_SET_NAME,PR_SET_PDEATHSIG,...` makes both platforms refuse those prctl
options (Lambda's real policy is not published). Needs root (devtools/sandbox_host.py); without it the stage
simply has no lambda or fargate sandbox, and says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.sandbox.selection import SANDBOX_MEMORY_CLASSES
from devtools.fargate_emulator import FargateConfig, FargateEmulator
from devtools.lambda_emulator import FunctionConfig, LambdaEmulator
from devtools.sandbox_host import Host, can_emulate

log = logging.getLogger("coderunner.emulators")

DENY_PRCTL_ENV = "CODERUNNER_EMULATE_DENY_PRCTL"
CONCURRENCY_ENV = "CODERUNNER_EMULATE_LAMBDA_CONCURRENCY"
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass
class Emulators:
    host: Host
    lambda_: LambdaEmulator
    fargate: FargateEmulator
    environment: dict[str, str]

    def stop(self) -> None:
        self.fargate.stop()
        self.lambda_.stop()
        self.host.close()


def deny_prctl_from_env() -> list[str]:
    return [name.strip() for name in os.environ.get(DENY_PRCTL_ENV, "").split(",") if name.strip()]


def create_fargate_resources(session: Callable[[str], Any], stage: str) -> dict[str, str]:
    """The cluster, task definition, network and bucket of the Fargate sandbox, on moto; the settings."""
    family, cluster, bucket = f"code-runner-{stage}-sandbox", f"code-runner-{stage}", f"code-runner-{stage}-artifacts"
    s3, ecs, ec2 = session("s3"), session("ecs"), session("ec2")
    s3.create_bucket(Bucket=bucket)
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="4096",
        # moto sums the containers' memory to place a task
        containerDefinitions=[{"name": "sandbox", "image": "sandbox", "memory": 4096, "readonlyRootFilesystem": True}],
    )
    # moto checks the awsvpc subnet exists and needs DNS hostnames on for the task's ENI (getmoto/moto#9089).
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="fargate-sandbox", Description="no egress", VpcId=vpc)["GroupId"]
    return {
        "CODERUNNER_FARGATE_CLUSTER": cluster,
        "CODERUNNER_FARGATE_TASK_DEFINITION": family,
        "CODERUNNER_FARGATE_SUBNETS": subnet,
        "CODERUNNER_FARGATE_SECURITY_GROUPS": group,
        "CODERUNNER_ARTIFACTS_BUCKET": bucket,
    }


def start_emulators(
    stage: str,
    session: Callable[[str], Any],
    deliver: Callable[[dict[str, Any]], Any],
    credentials: dict[str, str],
    deny_prctl: list[str] | None = None,
    concurrency: int | None = None,
) -> Emulators | None:
    """Both emulators for `stage` (None, logged, where this host cannot run them). `session(service)` is a
    boto3 client on the stack's moto; `credentials` are the stack's own (the sandbox function's "role")."""
    why_not = can_emulate()
    if why_not is not None:
        log.warning("no lambda or fargate sandbox on this stage: %s", why_not)
        return None
    denied = deny_prctl_from_env() if deny_prctl is None else deny_prctl
    settings = create_fargate_resources(session, stage)
    host = Host()
    # One function per memory class, as deployed (the Lambda adapter invokes `<prefix>_<mb>`).
    prefix = f"code-runner-{stage}-sandbox"
    functions = [
        FunctionConfig(
            name=f"{prefix}_{size}",
            memory_mb=size,
            environment={name: credentials[name] for name in CREDENTIALS if name in credentials},
            deny_prctl=denied,
            concurrency=concurrency or int(os.environ.get(CONCURRENCY_ENV, "8")),
        )
        for size in SANDBOX_MEMORY_CLASSES
    ]
    lambda_ = LambdaEmulator(functions, host)
    endpoint = lambda_.start()
    fargate = FargateEmulator(session("ecs"), FargateConfig(cluster=settings["CODERUNNER_FARGATE_CLUSTER"],
                                                           deny_prctl=denied), deliver, host)  # fmt: skip
    fargate.start()
    if denied:
        log.warning("emulated Lambda and Fargate refuse prctl %s", denied)
    environment = {**settings, "CODERUNNER_SANDBOX_FUNCTION": prefix, "AWS_ENDPOINT_URL_LAMBDA": endpoint}
    log.info("lambda emulator on %s, fargate emulator on cluster %s", endpoint, settings["CODERUNNER_FARGATE_CLUSTER"])
    return Emulators(host, lambda_, fargate, environment)


def app_rule_target(module: Any, handler_name: str = "fargate_done") -> Callable[[dict[str, Any]], Any]:
    """`deliver` for the emulator: the handler of app.py (`module`) that an EventBridge rule triggers, called
    only for events the rule's pattern matches, with the event as Lambda passes it."""
    from devtools.fargate_emulator import matches

    config = next(source for source in module.app.event_sources if source.name == handler_name)
    handler = getattr(module, config.handler_string.rsplit(".", 1)[-1])

    def deliver(event: dict[str, Any]) -> Any:
        if matches(config.event_pattern, event):
            return handler(event, None)
        log.warning("task event does not match the %s rule: %s", handler_name, event.get("detail", {}).get("group"))
        return None

    return deliver
