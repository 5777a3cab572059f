"""The Lambda and Fargate emulators behave as the platforms do where it matters to the sandboxes: the Invoke
API's errors (404, 429), the function's timeout and memory, warm environments reused with nothing of a job
visible to the next, the environment's own uid, credentials and Runtime API, the image's contents, and
Fargate's task life (stopped by the platform, its event's shape)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import PLANTED_SECRET, Emulated
from sandboxes import FargateRunner, SyncRunner, request_for

from chalicelib.domain.errors import DependencyThrottled
from chalicelib.sandbox.models import SandboxUnavailable
from devtools.attacks import Attack, Outcome
from devtools.fargate_emulator import matches, wait_for
from devtools.sandbox_image import IMAGE_PACKAGES, IMAGE_PATHS, ROOT

pytestmark = pytest.mark.xdist_group("emulators")


def _program(source: str, stdin: str = "", **limits: Any) -> Attack:
    return Attack("emulator-check", "python3", source, lambda _: None, limits=limits, stdin=stdin)


def _run(emulated: Emulated, function: str, source: str, stdin: str = "", **limits: Any) -> Outcome:
    return SyncRunner(emulated.sandboxes[function]).run(request_for(_program(source, stdin, **limits)))


def test_the_dockerfile_ships_what_the_emulators_install() -> None:
    dockerfile = (ROOT / "infra" / "sandbox" / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE)
    assert sorted(copied) == sorted(IMAGE_PATHS)
    assert "pip install" in dockerfile and "pydantic" in dockerfile and "awslambdaric" in dockerfile
    assert set(IMAGE_PACKAGES) >= {"pydantic", "pydantic_core"}


def test_the_image_needs_no_boto3(emulated: Emulated) -> None:
    """The handler and the task entry import from the image alone; boto3 is not there to import."""
    code = str(emulated.lambda_emulator.host.code)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "import chalicelib.sandbox.lambda_entry, chalicelib.sandbox.fargate_entry\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules\n"
        "try:\n    import boto3\nexcept ImportError:\n    print('no boto3')\n"
    )
    done = subprocess.run(["/usr/bin/python3", "-I", "-c", script, code], capture_output=True, text=True)
    assert done.stdout == "no boto3\n", done.stderr


def test_an_unknown_function_is_unavailable(emulated: Emulated) -> None:
    from chalicelib.adapters.lambda_sandbox import LambdaSandbox

    missing = LambdaSandbox("no-such-function", client=emulated.sandboxes["sandbox"].client)
    with pytest.raises(SandboxUnavailable, match="ResourceNotFoundException"):
        missing.run(request_for(_program("print(1)")))


def test_a_handler_error_is_a_function_error_the_adapter_types(emulated: Emulated) -> None:
    from chalicelib.sandbox.runtimes import UnknownRuntime

    request = request_for(_program("print(1)")).model_copy(update={"runtime": "cobol"})
    with pytest.raises(UnknownRuntime, match="cobol"):  # X-Amz-Function-Error, errorType UnknownRuntime
        emulated.sandboxes["sandbox"].run(request)


def test_the_denied_prctl_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.sandbox_emulators import DENY_PRCTL_ENV, deny_prctl_from_env

    monkeypatch.setenv(DENY_PRCTL_ENV, "PR_SET_NAME, PR_SET_PDEATHSIG,")
    assert deny_prctl_from_env() == ["PR_SET_NAME", "PR_SET_PDEATHSIG"]


def test_every_environment_busy_is_a_throttle(emulated: Emulated) -> None:
    function = emulated.function("sandbox-warm")  # concurrency 1
    busy = threading.Thread(target=_run, args=(emulated, "sandbox-warm", "import time; time.sleep(3)"))
    busy.start()
    try:
        wait_for(lambda: function.busy == 1, 60, "the first invocation did not start")
        with pytest.raises(DependencyThrottled, match="TooManyRequestsException"):
            emulated.sandboxes["sandbox-warm"].run(request_for(_program("print(1)")))
    finally:
        busy.join()


def test_the_functions_timeout_ends_the_invocation_and_its_environment(emulated: Emulated) -> None:
    function = emulated.function("sandbox-small")  # 4 s
    outcome = _run(emulated, "sandbox-small", "import time; time.sleep(60)", wall_time_s=30)
    assert outcome.status == "error" and "Sandbox.Timedout" in outcome.detail, outcome
    timed_out = function.environments[-1]
    assert timed_out.dead.is_set()
    assert _run(emulated, "sandbox-small", "print(input())", "next").stdout == "next\n"  # a fresh environment
    assert function.environments[-1] is not timed_out


def test_the_functions_memory_is_a_hard_cap(emulated: Emulated) -> None:
    # The job may use 1 GB, the function has 256 MB: the environment's cgroup ends it, as Lambda's would.
    code = "x = b'x' * (600 * 1024 * 1024)\nprint('allocated', len(x))\n"
    outcome = _run(emulated, "sandbox-small", code, memory_mb=1024, wall_time_s=20)
    assert "allocated" not in outcome.stdout, outcome
    killed = outcome.status == "ran" and outcome.result["signal"] == "SIGKILL"
    assert killed or (outcome.status == "error" and "Runtime.OutOfMemory" in outcome.detail), outcome


_WARM_JOB = r"""
import os, sys
n = sys.stdin.read().strip()
seen = []
for root in {os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp", "/dev/shm"}:
    try:
        seen += [f"{root}/{name}" for name in os.listdir(root) if name.startswith("warm-job-")]
    except OSError:
        pass
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        try:
            if b"warm-job-" in open(f"/proc/{pid}/cmdline", "rb").read():
                seen.append(f"process {pid}")
        except OSError:
            pass
seen += [name for name in os.environ if name.startswith("WARM_JOB")]
print("seen", sorted(seen))
for root in (os.getcwd(), "/tmp", os.environ.get("HOME", "/tmp")):
    with open(os.path.join(root, f"warm-job-{n}"), "w") as f:
        f.write(n)
os.environ["WARM_JOB_" + n] = n
if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", f"warm-job-{n}"])
print("left")
"""


def test_a_warm_environment_runs_100_jobs_and_none_sees_the_last(emulated: Emulated) -> None:
    function = emulated.function("sandbox-warm")  # one environment at most
    before = {env.uid: env.invocations for env in function.environments}
    for n in range(100):
        outcome = _run(emulated, "sandbox-warm", _WARM_JOB, str(n))
        assert (outcome.status, outcome.stdout) == ("ran", "seen []\nleft\n"), (n, outcome)
    served = [env for env in function.environments if env.invocations - before.get(env.uid, 0) > 0]
    assert len(served) == 1 and served[0].invocations - before.get(served[0].uid, 0) == 100
    assert not served[0].dead.is_set()  # warm, reused: the same runtime process all along


def test_an_environment_is_its_own_uid_with_the_roles_credentials_hidden(emulated: Emulated) -> None:
    assert _run(emulated, "sandbox", "print(1)").stdout == "1\n"
    env = next(env for env in emulated.function("sandbox").environments if not env.dead.is_set())
    assert env.container.proc is not None
    pid = env.container.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{env.uid}\s", status, re.MULTILINE) and env.uid != os.getuid()
    assert re.search(r"^Seccomp:\s+2", status, re.MULTILINE)  # the platform's policy is on
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0  # non-dumpable: its /proc files belong to root
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert PLANTED_SECRET.encode() not in environ and environ.strip(b"\0") == b""  # the block is zeroed
    assert env.runtime_api.startswith("127.0.0.1:")


def test_the_lambda_sandbox_offers_its_layers_and_runtimes(emulated: Emulated) -> None:
    offer = emulated.sandboxes["sandbox"].offer()
    assert offer.usable and {"python3", "node", "bash"} <= set(offer.runtimes)
    layers = offer.layers
    assert (layers["bwrap"], layers["cgroups"], layers["uid_switch"]) == (False, False, False)  # as in Lambda
    assert (layers["network"], layers["handler_non_dumpable"], layers["credentials_removed"]) == ("seccomp", True, True)
    assert layers["initial_environ_zeroed"] is True


def test_a_task_stopped_by_the_platform_ends_with_its_event(emulated: Emulated) -> None:
    request = request_for(_program("import time; time.sleep(100)", wall_time_s=200))
    arn = emulated.fargate.launch(request)
    wait_for(lambda: arn in emulated.fargate_emulator.running, 120, "the task did not start")
    emulated.fargate.stop(arn, "past its deadline")
    event = emulated.events.wait(arn, timeout_s=60)
    detail = event["detail"]
    assert (detail["lastStatus"], detail["stopCode"], detail["stoppedReason"]) == (
        "STOPPED",
        "UserInitiated",
        "past its deadline",
    )
    assert emulated.fargate.fetch_result(request.job_id) is None


def test_the_task_event_has_the_shape_the_fargate_done_rule_matches(emulated: Emulated) -> None:
    import app

    outcome = FargateRunner(emulated.fargate, emulated.events).run(request_for(_program("print(1)")))
    assert outcome.stdout == "1\n"
    event = emulated.fargate_emulator.events[-1]
    rule = next(source for source in app.app.event_sources if source.name == "fargate_done")
    assert matches(
        rule.event_pattern, {**event, "detail": {**event["detail"], "group": rule.event_pattern["detail"]["group"][0]}}
    )
    assert event["detail"]["group"].startswith("family:code-runner-") and event["detail"]["group"].endswith("-sandbox")
    env = {v["name"] for v in event["detail"]["overrides"]["containerOverrides"][0]["environment"]}
    assert {"SANDBOX_REQUEST_URL", "SANDBOX_RESULT_URL", "SANDBOX_RESULT_KEY"} <= env
    assert event["detail"]["containers"][0]["exitCode"] == 0
