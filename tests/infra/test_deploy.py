"""The three deploy commands as far as this machine allows: `make package` for real, then `make image` and
`make deploy` against stub `aws` and `docker` executables that record their argv (no network), and again with
DRY_RUN=1, which must print the same commands in the same order and run none of them."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra import deploy

pytestmark = pytest.mark.xdist_group("infra")

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
ACCOUNT = "123456789012"
DIGEST = "sha256:" + "ab" * 32
PREFIX_LIST = "pl-0a1b2c3d"
URL = f"https://abc123.execute-api.{REGION}.amazonaws.com/api/"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"

# What the stubs answer, by the first two words of the command; a number is an exit status (not found).
ANSWERS: dict[str, str | int] = {
    "aws sts": ACCOUNT,
    "aws ecr describe-repositories": 254,
    "aws ecr get-login-password": "stub-password",
    "aws ecr describe-images": DIGEST,
    "aws ec2 describe-managed-prefix-lists": PREFIX_LIST,
    "aws s3api head-bucket": 254,
    "aws cloudformation describe-stacks": URL,
}
STUB = """#!{python}
import json, os, sys
argv = [os.path.basename(sys.argv[0]), *sys.argv[1:]]
entry = {{"argv": argv}}
if argv[:2] == ["docker", "login"]:
    entry["stdin"] = sys.stdin.read()
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
answers = {answers}
answer = answers.get(" ".join(argv[:3]), answers.get(" ".join(argv[:2]), ""))
if isinstance(answer, int):
    sys.exit(answer)
print(answer)
"""

IMAGE_STEPS = [
    "aws sts get-caller-identity",
    "aws ecr describe-repositories",
    "aws ecr create-repository",
    "aws ecr get-login-password",
    "docker login --username",
    "docker build --platform",
    "docker push",
    "aws ecr describe-images",
]
DEPLOY_STEPS = [
    "aws sts get-caller-identity",
    "aws ec2 describe-managed-prefix-lists",
    "aws s3api head-bucket",
    "aws s3 mb",
    "aws cloudformation package",
    "aws cloudformation deploy",
    "aws cloudformation describe-stacks",
]


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make package` for real (the template, the zip and the checks), into a directory of its own."""
    out = tmp_path_factory.mktemp("build")
    done = subprocess.run(
        ["make", "-s", "package", "STAGE=dev"],
        cwd=ROOT,
        env={**os.environ, "OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "sam.json").exists() and (out / "deployment.zip").exists()
    return out


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment whose PATH finds stub `aws` and `docker` first; their calls go to STUB_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("aws", "docker"):
        path = bin_dir / name
        path.write_text(STUB.format(python=sys.executable, answers=repr(ANSWERS)))
        path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "ALARM_EMAIL", "PARAMS", "STACK")}
    env.update(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        STUB_LOG=str(tmp_path / "calls.jsonl"),
        AWS_REGION=REGION,
        IMAGE_TAG="t1",
    )
    yield env


def make(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", target, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def calls(env: dict[str, str]) -> list[dict[str, Any]]:
    log = Path(env["STUB_LOG"])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def steps(lines: list[str], expected: list[str]) -> list[str]:
    """Which of `expected` each command starts with, in order (a printed line may hold `a | b` or `a || b`)."""
    out = []
    for line in lines:
        for part in re.split(r" \|\|? ", re.sub(r"^\w+=\$\((.*)\)$", r"\1", line)):
            out += [step for step in expected if part.startswith(step)]
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)  # `make package` for real: ~60 s idle, over 120 s on a loaded 2-core machine
def test_package_image_and_deploy_run_the_aws_and_docker_commands_in_order(
    packaged: Path, stubs: dict[str, str]
) -> None:
    env = {**stubs, "BUILD_DIR": str(packaged)}
    image = make("image", env)
    assert image.returncode == 0, image.stderr
    pushed = calls(env)
    assert steps([" ".join(c["argv"]) for c in pushed], IMAGE_STEPS) == IMAGE_STEPS
    by_step = {step: c for c in pushed for step in IMAGE_STEPS if " ".join(c["argv"]).startswith(step)}
    assert by_step["docker push"]["argv"] == ["docker", "push", f"{REGISTRY}/code-runner-sandbox:t1"]
    assert by_step["docker build --platform"]["argv"] == [
        "docker", "build", "--platform", "linux/amd64", "-f", "infra/sandbox/Dockerfile",
        "-t", f"{REGISTRY}/code-runner-sandbox:t1", ".",
    ]  # fmt: skip
    # The registry password goes through stdin, never through argv or the output.
    assert by_step["docker login --username"]["stdin"].strip() == "stub-password"
    assert not any("stub-password" in " ".join(c["argv"]) for c in pushed) and "stub-password" not in image.stdout
    assert json.loads((packaged / "sandbox-image.json").read_text())["digest"] == DIGEST

    deployed = make("deploy", env, "STAGE=dev")
    assert deployed.returncode == 0, deployed.stderr
    run = calls(env)[len(pushed) :]
    assert steps([" ".join(c["argv"]) for c in run], DEPLOY_STEPS) == DEPLOY_STEPS
    (stack,) = [c["argv"] for c in run if c["argv"][1:3] == ["cloudformation", "deploy"]]
    assert stack[stack.index("--stack-name") + 1] == "code-runner-dev"
    assert stack[stack.index("--template-file") + 1] == str(packaged / "packaged-dev.yaml")
    assert {"CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"} <= set(stack)
    assert stack[stack.index("--parameter-overrides") + 1 :] == [
        "SandboxImageRepository=code-runner-sandbox",
        f"SandboxImageDigest={DIGEST}",
        f"S3PrefixListId={PREFIX_LIST}",
    ]
    (upload,) = [c["argv"] for c in run if c["argv"][1:3] == ["cloudformation", "package"]]
    assert upload[upload.index("--template-file") + 1] == str(packaged / "sam.json")
    assert all(c["argv"][c["argv"].index("--region") + 1] == REGION for c in run)
    assert URL in deployed.stdout and "coderunner --stage dev keys create" in deployed.stdout

    # DRY_RUN=1: the same commands, in the same order, printed; nothing runs.
    dry = {**env, "DRY_RUN": "1"}
    before = len(calls(env))
    printed_image, printed_deploy = make("image", dry), make("deploy", dry, "STAGE=dev")
    assert printed_image.returncode == printed_deploy.returncode == 0, printed_image.stderr + printed_deploy.stderr
    assert len(calls(env)) == before, "a dry run ran a command"
    assert steps(printed_image.stdout.splitlines(), IMAGE_STEPS) == IMAGE_STEPS
    assert steps(printed_deploy.stdout.splitlines(), DEPLOY_STEPS) == DEPLOY_STEPS
    (printed_stack,) = [line for line in printed_deploy.stdout.splitlines() if " cloudformation deploy " in line]
    assert shlex.split(printed_stack)[-3:] == [
        "SandboxImageRepository=code-runner-sandbox",
        f"SandboxImageDigest={DIGEST}",  # the image `make image` recorded
        "S3PrefixListId=${S3_PREFIX_LIST}",  # looked up by the printed line before
    ]
    assert "ACCOUNT=$(aws sts get-caller-identity --query Account --output text --region eu-west-1)" in (
        printed_deploy.stdout
    )


def test_dry_run_without_any_build_prints_the_commands_with_variables(
    stubs: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "sam.json").write_text(json.dumps({"Parameters": {"Stage": {"AllowedValues": ["prod"]}}}))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("PARAMS", "ApiThrottleRateLimit=300")
    assert deploy.main(["deploy", "--stage", "prod", "--build-dir", str(build)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1] == "REGION=$(aws configure get region)"
    (stack,) = [line for line in printed if " cloudformation deploy " in line]
    words = shlex.split(stack)
    assert words[words.index("--region") + 1] == "${REGION}" and words[words.index("--stack-name") + 1] == (
        "code-runner-prod"
    )
    assert "SandboxImageDigest=${SANDBOX_IMAGE_DIGEST}" in words and words[-1] == "ApiThrottleRateLimit=300"


@pytest.mark.parametrize(
    ("stage_built", "image", "message"),
    [
        (None, True, "sam.json is missing: run `make package STAGE=<stage>` first"),
        ("dev", True, "was packaged for stage 'dev': run `make package STAGE=prod`"),
        ("prod", False, "sandbox-image.json is missing: run `make image` first"),
    ],
)
def test_deploy_refuses_what_it_cannot_deploy(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stage_built: str | None,
    image: bool,
    message: str,
) -> None:
    if stage_built:
        (tmp_path / "sam.json").write_text(json.dumps({"Parameters": {"Stage": {"AllowedValues": [stage_built]}}}))
    if image:
        (tmp_path / "sandbox-image.json").write_text(json.dumps({"repository": "r", "digest": DIGEST}))
    monkeypatch.delenv("DRY_RUN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no aws, no docker: it must stop before needing them
    assert deploy.main(["deploy", "--stage", "prod", "--build-dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_printed_commands_are_shell_words() -> None:
    line = deploy.command_line(["aws", "--query", "Stacks[0].Outputs[?OutputKey=='EndpointURL']", "s3://b-${ACCOUNT}"])
    assert shlex.split(line) == ["aws", "--query", "Stacks[0].Outputs[?OutputKey=='EndpointURL']", "s3://b-${ACCOUNT}"]
    assert '"s3://b-${ACCOUNT}"' in line  # double quotes: the variable still expands when the line is run


def test_the_deployer_policy_covers_every_service_of_the_template_and_lints_clean() -> None:
    lint = pytest.importorskip("cfnlint.api")
    from infra import build_template

    policy = json.loads((ROOT / "infra" / "deployer-policy.json").read_text())
    allowed = {a.split(":")[0] for s in policy["Statement"] if s["Effect"] == "Allow" for a in _listed(s["Action"])}
    types = {spec["Type"] for spec in build_template.build("dev")[1]["Resources"].values()}
    for type_ in types:
        service = type_.split("::")[1].lower()
        # SAM turns its functions and API into Lambda, API Gateway and EventBridge resources.
        needed = {"lambda", "apigateway", "events", "iam"} if service == "serverless" else {service}
        # API Gateway's v2 resources (the WebSocket API) are managed through IAM's `apigateway` actions.
        needed = {"apigateway" if each == "apigatewayv2" else each for each in needed}
        assert needed <= allowed, type_
    assert {"cloudformation", "s3", "ecr", "sts"} <= allowed  # package, deploy, image
    # Every action exists and every Resource is an ARN (cfn-lint knows IAM's action list).
    wrapped = {"Resources": {"Deployer": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": policy}}}}
    args = lint.ManualArgs(regions=["us-east-1"], ignore_checks=["I"])
    assert [str(m) for m in lint.lint(json.dumps(wrapped), args) if m.rule.id[0] in "EW"] == []


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_the_deployer_policy_manages_the_http_api_and_its_access_log_delivery() -> None:
    """The API and the WebSocket API are API Gateway v2 APIs (`/apis`); an HTTP API's access log is a CloudWatch
    Logs log delivery, whose actions take no resource. No REST API, no account setting, no WAF any more."""
    policy = json.loads((ROOT / "infra" / "deployer-policy.json").read_text())
    statements = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    (gateway,) = [s for s in statements if any(a.startswith("apigateway:") for a in _listed(s["Action"]))]
    assert "arn:aws:apigateway:*::/apis/*" in gateway["Resource"]
    assert not any("/restapis" in r or "/account" in r for r in gateway["Resource"])
    delivery = [s for s in statements if "logs:CreateLogDelivery" in _listed(s["Action"])]
    assert delivery and delivery[0]["Resource"] == "*"
    assert not any(a.startswith("wafv2:") for s in statements for a in _listed(s["Action"]))
