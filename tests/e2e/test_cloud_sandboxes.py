"""The cloud sandboxes through the local stack's API, as a user (and an operator after a deploy) drives them:
`"sandbox": "lambda"` and `"fargate"` run on the emulators (devtools/sandbox_emulators.py) through the
cloud's adapters, give every normal job the verdict the local sandbox gives it, and `make verify-cloud` (the
whole attack suite through the API) passes; the stack's planted secret is in no job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devtools import verify_cloud
from devtools.attacks import NORMAL_JOBS
from tests.e2e.conftest import PLANTED_SECRET
from tests.e2e.stackproc import Api, StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("e2e")]
CLOUD = ("lambda", "fargate")


@pytest.fixture(scope="module")
def user(stack: StackProcess) -> Api:
    api = stack.api(stack.make_key("enterprise"))
    offered = api.call("GET", "/v1/runtimes").body["sandboxes"]
    if not set(CLOUD) <= set(offered):
        pytest.skip(f"this stack runs no Lambda and Fargate emulators (they need root): {sorted(offered)}")
    return api


def _job(job: Any, sandbox: str) -> dict[str, Any]:
    limits = {name: value for name, value in job.limits.items()}
    return {"runtime": job.runtime, "source": job.source, "stdin": job.stdin, "limits": limits, "sandbox": sandbox}


def _verdict(job: dict[str, Any]) -> tuple[Any, ...]:
    result = job.get("result") or {}
    # The signal only where it is the verdict: a program past its output cap may have exited before the kill.
    signal = result.get("signal") if result.get("reason") == "signal" else None
    return job["status"], result.get("reason"), signal, result.get("stdout")


def test_lambda_and_fargate_give_every_job_the_local_sandboxs_verdict(user: Api) -> None:
    submitted = {
        (job.name, sandbox): user.submit_ok(_job(job, sandbox)) for job in NORMAL_JOBS for sandbox in ("local", *CLOUD)
    }
    finished = {cell: user.wait(job_id, timeout=300) for cell, job_id in submitted.items()}
    for job in NORMAL_JOBS:
        local = finished[job.name, "local"]
        assert job.problem(local) is None, (job.name, local)
        for sandbox in CLOUD:
            ran = finished[job.name, sandbox]
            assert ran["sandbox"] == sandbox, ran
            assert _verdict(ran) == _verdict(local), (job.name, sandbox, ran)


def test_verify_cloud_passes_on_the_local_stack(user: Api, stack: StackProcess, capsys: pytest.CaptureFixture) -> None:
    argv = ["--url", stack.base_url, "--key", user.key or "", "--parallel", "8"]
    code = verify_cloud.main([*argv, *(arg for sandbox in CLOUD for arg in ("--sandbox", sandbox))])
    report = capsys.readouterr().out
    assert code == 0, report
    assert "ESCAPED" not in report and "inconclusive" not in report and "contained: 0 escaped" in report
    stored = json.dumps(stack.scan("jobs"), default=str)
    assert '"sandbox": "lambda"' in stored and '"sandbox": "fargate"' in stored
    assert PLANTED_SECRET not in stored  # in no job's output, error or anything else kept of it


ALL_PRCTL = "PR_SET_NAME,PR_SET_PDEATHSIG,PR_SET_CHILD_SUBREAPER,PR_SET_NO_NEW_PRIVS,PR_SET_SECCOMP,PR_SET_DUMPABLE"


@pytest.mark.extended  # a stack of its own: beyond make test's budget (the sandbox tests cover the refusal)
def test_verify_cloud_when_the_platform_refuses_every_prctl(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture
) -> None:
    """The emulated Lambda refusing every prctl option: its sandbox refuses every job and says why (nothing
    runs, nothing escapes), /v1/runtimes shows it, and verify-cloud passes with every cell refused."""
    from tests.e2e.conftest import _run

    settings = {"CODERUNNER_EMULATE_DENY_PRCTL": ALL_PRCTL, "CODERUNNER_LOCAL_SECRET_ACCESS_KEY": PLANTED_SECRET}
    running = _run(tmp_path_factory.mktemp("denied"), settings=settings)
    stack = next(running)
    try:
        api = stack.api(stack.make_key("enterprise"))
        lambda_ = api.call("GET", "/v1/runtimes").body["sandboxes"].get("lambda")
        if lambda_ is None:
            pytest.skip("this stack runs no Lambda emulator (it needs root)")
        assert not lambda_["usable"] and "non-dumpable" in lambda_["refusal"], lambda_
        code = verify_cloud.main(["--url", stack.base_url, "--key", api.key or "", "--sandbox", "lambda"])
        report = capsys.readouterr().out
        assert code == 0, report
        assert "ESCAPED" not in report and "contained " not in report.split("\n\n")[0]  # every run refused
        assert "cannot make itself non-dumpable" in report
        assert PLANTED_SECRET not in json.dumps(stack.scan("jobs"), default=str)
    finally:
        running.close()  # stops the stack
