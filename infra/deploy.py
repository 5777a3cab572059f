"""`make image` and `make deploy`: every AWS CLI and docker command of a deploy, run in order, or printed with
DRY_RUN=1 (as a shell script: a value one command looks up is a `$VARIABLE` in the ones after it).

    python -m infra.deploy image             # build infra/sandbox/Dockerfile, push it to ECR, note its digest
    python -m infra.deploy deploy --stage prod   # upload build/, deploy the stack, print the API URL

Only the standard library: the machine that deploys needs Python, the AWS CLI and Docker, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "code-runner"  # chalicelib.config.APP_NAME (not imported: this runs without the app's dependencies)
DOCKERFILE = "infra/sandbox/Dockerfile"
IMAGE_RECORD = "sandbox-image.json"
DEFAULT_REPOSITORY = "code-runner-sandbox"  # the template's SandboxImageRepository default
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")  # unnamed IAM roles; the SAM transform
_PLAIN = re.compile(r"[\w@%+=:,./$-]+")


class DeployError(RuntimeError):
    """A step cannot go on (a missing build, a failed command); the message says what to do."""


def quote(token: str) -> str:
    """A shell word; `$VARIABLE`s (looked up by an earlier printed command) stay expandable."""
    if _PLAIN.fullmatch(token):
        return token
    if ("$" in token or "'" in token) and not re.search(r'["`\\]', token):
        return f'"{token}"'
    return shlex.quote(token)


def command_line(argv: Sequence[str]) -> str:
    return " ".join(quote(token) for token in argv)


@dataclass
class Shell:
    """Runs commands, or prints them when `dry_run`. Output a command prints goes to `out` either way."""

    dry_run: bool
    out: TextIO = field(default_factory=lambda: sys.stdout)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, argv: Sequence[str], stdin: str | None = None) -> None:
        if self.dry_run:
            self.say(command_line(argv))
            return
        self.say(f"+ {command_line(argv)}")
        done = subprocess.run(list(argv), input=stdin, text=True, check=False)
        if done.returncode:
            raise DeployError(f"`{command_line(argv)}` failed with exit status {done.returncode}")

    def capture(self, name: str, argv: Sequence[str]) -> str:
        """The command's output (stripped); in a dry run, `${NAME}`, after printing `NAME=$(command)`."""
        if self.dry_run:
            self.say(f"{name}=$({command_line(argv)})")
            return f"${{{name}}}"
        self.say(f"+ {name}=$({command_line(argv)})")
        done = subprocess.run(list(argv), capture_output=True, text=True, check=False)
        if done.returncode:
            raise DeployError(f"`{command_line(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def unless(self, check: Sequence[str], argv: Sequence[str]) -> None:
        """Run `argv` unless `check` succeeds (e.g. create what does not exist yet)."""
        if self.dry_run:
            self.say(f"{command_line(check)} >/dev/null 2>&1 || {command_line(argv)}")
            return
        self.say(f"+ {command_line(check)}")
        if subprocess.run(list(check), capture_output=True, check=False).returncode:
            self.run(argv)

    def pipe(self, source: Sequence[str], sink: Sequence[str]) -> None:
        """`source | sink`, the data never printed (a password)."""
        if self.dry_run:
            self.say(f"{command_line(source)} | {command_line(sink)}")
            return
        self.run(sink, stdin=self.capture("_", source))


def region(shell: Shell) -> str:
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return found or shell.capture("REGION", ["aws", "configure", "get", "region"])


def aws(region_: str, *argv: str) -> list[str]:
    return ["aws", *argv, "--region", region_]


def registry(account: str, region_: str) -> str:
    suffix = "amazonaws.com.cn" if region_.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region_}.{suffix}"


def image_tag() -> str:
    """IMAGE_TAG, else the commit (marked -dirty with local changes); informational: deploys pin the digest."""
    if os.environ.get("IMAGE_TAG"):
        return os.environ["IMAGE_TAG"]
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode:
        return "latest"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return head.stdout.strip() + ("-dirty" if dirty.strip() else "")


def push_image(shell: Shell, build_dir: Path, repository: str) -> dict[str, str]:
    """Build the Fargate sandbox image, push it to `repository` (created if missing), and record its digest."""
    region_ = region(shell)
    account = shell.capture(
        "ACCOUNT", aws(region_, "sts", "get-caller-identity", "--query", "Account", "--output", "text")
    )
    host = registry(account, region_)
    tag = image_tag()
    shell.unless(
        aws(region_, "ecr", "describe-repositories", "--repository-names", repository),
        aws(region_, "ecr", "create-repository", "--repository-name", repository)
        + ["--image-scanning-configuration", "scanOnPush=true"],
    )
    shell.pipe(
        aws(region_, "ecr", "get-login-password"),
        ["docker", "login", "--username", "AWS", "--password-stdin", host],
    )
    image = f"{host}/{repository}:{tag}"
    shell.run(["docker", "build", "--platform", "linux/amd64", "-f", DOCKERFILE, "-t", image, "."])
    shell.run(["docker", "push", image])
    digest = shell.capture(
        "DIGEST",
        aws(region_, "ecr", "describe-images", "--repository-name", repository, "--image-ids", f"imageTag={tag}")
        + ["--query", "imageDetails[0].imageDigest", "--output", "text"],
    )
    uri = f"{host}/{repository}@{digest}"
    record = {"region": region_, "repository": repository, "tag": tag, "digest": digest, "uri": uri}
    if shell.dry_run:
        shell.say(f"# then writes {build_dir / IMAGE_RECORD}: the repository and digest `make deploy` passes")
    else:
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / IMAGE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        shell.say(f"pushed {record['uri']} (recorded in {build_dir / IMAGE_RECORD})")
    return record


def packaged_stage(build_dir: Path) -> str:
    """The stage build/sam.json was packaged for (its Stage parameter allows only that one)."""
    path = build_dir / "sam.json"
    if not path.exists():
        raise DeployError(f"{path} is missing: run `make package STAGE=<stage>` first")
    return str(json.loads(path.read_text())["Parameters"]["Stage"]["AllowedValues"][0])


def check_package(shell: Shell, build_dir: Path, stage: str) -> None:
    """build/ holds a package of `stage`; a dry run only says what is wrong, and prints the commands anyway."""
    try:
        built_for = packaged_stage(build_dir)
        if built_for != stage:
            raise DeployError(
                f"{build_dir}/sam.json was packaged for stage {built_for!r}: run `make package STAGE={stage}`"
            )
    except DeployError as exc:
        if not shell.dry_run:
            raise
        shell.say(f"# {exc}")


def image_record(shell: Shell, build_dir: Path, repository: str) -> dict[str, str]:
    path = build_dir / IMAGE_RECORD
    if path.exists():
        return dict(json.loads(path.read_text()))
    if not shell.dry_run:
        raise DeployError(f"{path} is missing: run `make image` first (it pushes the Fargate sandbox image)")
    shell.say(f"# SANDBOX_IMAGE_DIGEST: the digest `make image` records in {path} (missing here)")
    return {"repository": repository, "digest": "${SANDBOX_IMAGE_DIGEST}"}


def overrides(image: dict[str, str], prefix_list: str) -> list[str]:
    """The stack parameters a deploy always sets, then ALARM_EMAIL and PARAMS ("Key=Value Key=Value")."""
    out = [
        f"SandboxImageRepository={image['repository']}",
        f"SandboxImageDigest={image['digest']}",
        f"S3PrefixListId={prefix_list}",
    ]
    if os.environ.get("ALARM_EMAIL"):
        out.append(f"AlarmEmail={os.environ['ALARM_EMAIL']}")
    return out + shlex.split(os.environ.get("PARAMS", ""))


def deploy(shell: Shell, build_dir: Path, stage: str, repository: str = DEFAULT_REPOSITORY) -> str:
    """Upload the package, create or update the stack, and return the API's URL."""
    check_package(shell, build_dir, stage)
    image = image_record(shell, build_dir, repository)
    region_ = region(shell)
    if image.get("region", region_) != region_:
        raise DeployError(f"the sandbox image was pushed in {image['region']}, not {region_}: run `make image` here")
    account = shell.capture(
        "ACCOUNT", aws(region_, "sts", "get-caller-identity", "--query", "Account", "--output", "text")
    )
    prefix_list = shell.capture(
        "S3_PREFIX_LIST",
        aws(region_, "ec2", "describe-managed-prefix-lists")
        + ["--filters", f"Name=prefix-list-name,Values=com.amazonaws.{region_}.s3"]
        + ["--query", "PrefixLists[0].PrefixListId", "--output", "text"],
    )
    bucket = os.environ.get("DEPLOY_BUCKET") or f"{APP_NAME}-deploy-{account}-{region_}"
    stack = os.environ.get("STACK") or f"{APP_NAME}-{stage}"
    packaged = str(build_dir / f"packaged-{stage}.yaml")
    shell.unless(aws(region_, "s3api", "head-bucket", "--bucket", bucket), aws(region_, "s3", "mb", f"s3://{bucket}"))
    upload = ["--s3-bucket", bucket, "--s3-prefix", f"{APP_NAME}/{stage}"]
    shell.run(
        aws(region_, "cloudformation", "package", "--template-file", str(build_dir / "sam.json"))
        + upload
        + ["--output-template-file", packaged]
    )
    shell.run(
        aws(region_, "cloudformation", "deploy", "--template-file", packaged, "--stack-name", stack)
        + upload
        + ["--capabilities", *CAPABILITIES, "--no-fail-on-empty-changeset"]
        + ["--parameter-overrides", *overrides(image, prefix_list)]
    )
    return shell.capture(
        "API_URL",
        aws(region_, "cloudformation", "describe-stacks", "--stack-name", stack)
        + ["--query", "Stacks[0].Outputs[?OutputKey=='EndpointURL'].OutputValue", "--output", "text"],
    )


def first_steps(stage: str, url: str) -> str:
    return (
        f"\nThe API of stage {stage!r}: {url}\n"
        "First admin step: create an API key with the operator CLI (it writes to the stage's keys table with your\n"
        "AWS credentials; the plain key is printed once), then call the API with it:\n"
        f"  .venv/bin/coderunner --stage {stage} keys create --owner <you> --tier enterprise\n"
        f'  curl -H "Authorization: Bearer <the key>" {url}v1/runtimes\n'
        "Confirm the alarm e-mail subscription if you set ALARM_EMAIL (infra/DEPLOY.md)."
    )


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=("image", "deploy"))
    parser.add_argument("--stage", default=os.environ.get("STAGE", "dev"))
    parser.add_argument("--build-dir", type=Path, default=Path(os.environ.get("BUILD_DIR", "build")))
    parser.add_argument("--repository", default=os.environ.get("SANDBOX_IMAGE_REPOSITORY", DEFAULT_REPOSITORY))
    args = parser.parse_args(argv)
    shell = Shell(dry_run=os.environ.get("DRY_RUN", "") not in ("", "0"), out=out or sys.stdout)
    try:
        if args.action == "image":
            push_image(shell, args.build_dir, args.repository)
        else:
            shell.say(first_steps(args.stage, deploy(shell, args.build_dir, args.stage, args.repository)))
    except DeployError as exc:
        print(f"make {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
