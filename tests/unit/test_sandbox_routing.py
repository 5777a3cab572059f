"""Which sandbox runs a job in the cloud (on fakes): `auto` never picks one that lacks the runtime or refuses
to run user code; a refusal of an `auto` job moves it on to Fargate, of an explicit choice ends it in `error`
saying why; a result without a valid seal is never accepted, never retried, and counted."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.config import settings_from_env
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.jobs import JobStatus
from chalicelib.metric_names import SANDBOX_RESULT_REJECTED
from chalicelib.sandbox.models import ExecutionResult, ResultRejected, SandboxOffer, SandboxRefused
from chalicelib.services import catalog
from chalicelib.services.fargate import complete_from_event
from chalicelib.services.keys import create_key
from chalicelib.services.submit import submit_job
from chalicelib.services.worker import RetryLater, handle_message
from tests.fakes import FakeClock, FakeSandbox, FakeTaskSandbox, make_deps

REFUSAL = "no layer can cut the network"


@pytest.fixture
def deps() -> Any:
    deps = make_deps(settings_from_env({"CODERUNNER_SANDBOX_MODE": "cloud"}), FakeClock())
    deps.sandboxes = {"lambda": FakeSandbox()}
    deps.tasks = {"fargate": FakeTaskSandbox()}
    return deps


@pytest.fixture
def key(deps: Any) -> str:
    return create_key(deps, "acme", "pro")[0]


def deliver(deps: Any, job_id: str) -> str:
    return handle_message(deps, {"job_id": job_id, "tier": "pro"})


def test_auto_runs_in_lambda_when_it_offers_the_runtime(deps: Any, key: str) -> None:
    job_id = submit_job(deps, key, {"runtime": "node", "source": "console.log(1)"}).job.id
    assert deliver(deps, job_id) == "succeeded"
    assert deps.jobs.get(job_id).sandbox == "lambda"


def test_auto_never_picks_a_sandbox_without_the_runtime(deps: Any, key: str) -> None:
    deps.sandboxes["lambda"].offered = SandboxOffer(sandbox="lambda", runtimes={"python3": "3.11"})
    job_id = submit_job(deps, key, {"runtime": "node", "source": "console.log(1)"}).job.id
    assert deliver(deps, job_id) == "launched"
    assert deps.jobs.get(job_id).sandbox == "fargate" and deps.sandboxes["lambda"].calls == []
    with pytest.raises(ValidationFailed) as refused:  # an explicit choice of it is refused at submit
        submit_job(deps, key, {"runtime": "node", "source": "x", "sandbox": "lambda"})
    assert "has no runtime 'node'" in refused.value.details[0]["message"]


def test_a_runtime_no_sandbox_offers_is_refused_at_submit(deps: Any, key: str) -> None:
    for port in (deps.sandboxes["lambda"], deps.tasks["fargate"]):
        port.offered = port.offered.model_copy(update={"runtimes": {"python3": "3.11"}})
    with pytest.raises(ValidationFailed, match="not available"):
        submit_job(deps, key, {"runtime": "node", "source": "console.log(1)"})


def test_a_lambda_refusal_sends_an_auto_job_to_fargate(deps: Any, key: str) -> None:
    deps.sandboxes["lambda"].fail_with = [SandboxRefused("lambda", REFUSAL)]
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)"}).job.id
    with pytest.raises(RetryLater):  # nothing ran: the attempt is retried, elsewhere
        deliver(deps, job_id)
    assert deliver(deps, job_id) == "launched"
    job = deps.jobs.get(job_id)
    assert (job.status, job.sandbox, job.attempts) == (JobStatus.RUNNING, "fargate", 2)
    assert not catalog.offers(deps)["lambda"].usable


def test_a_lambda_refusal_ends_an_explicit_lambda_job_saying_why(deps: Any, key: str) -> None:
    deps.sandboxes["lambda"].fail_with = [SandboxRefused("lambda", REFUSAL)]
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)", "sandbox": "lambda"}).job.id
    assert deliver(deps, job_id) == "error"
    job = deps.jobs.get(job_id)
    assert job.error == f"the lambda sandbox refuses to run user code: {REFUSAL}" and job.attempts == 1
    assert deps.tasks["fargate"].launched == []


def test_a_rejected_lambda_result_is_an_error_at_once_and_counted(deps: Any, key: str) -> None:
    deps.sandboxes["lambda"].fail_with = [ResultRejected("the sandbox's result does not carry a valid MAC")]
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)"}).job.id
    assert deliver(deps, job_id) == "error"
    job = deps.jobs.get(job_id)
    assert "integrity check" in (job.error or "") and job.attempts == 1 and job.result is None
    assert deps.metrics.count(SANDBOX_RESULT_REJECTED, sandbox="lambda") == 1


def _launched(deps: Any, key: str) -> tuple[str, str]:
    job_id = submit_job(deps, key, {"runtime": "python", "source": "print(1)", "sandbox": "fargate"}).job.id
    assert deliver(deps, job_id) == "launched"
    return job_id, deps.jobs.get(job_id).task_arn


class _Rejecting(FakeTaskSandbox):
    def __init__(self, failure: Exception) -> None:
        super().__init__()
        self.failure = failure

    def fetch_result(self, job_id: str) -> ExecutionResult | None:
        raise self.failure


def test_a_rejected_fargate_result_is_an_error_and_counted(deps: Any, key: str) -> None:
    deps.tasks["fargate"] = _Rejecting(ResultRejected("forged"))
    job_id, arn = _launched(deps, key)
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn)) == "error"
    assert deps.metrics.count(SANDBOX_RESULT_REJECTED, sandbox="fargate") == 1
    assert "integrity check" in (deps.jobs.get(job_id).error or "")


def test_a_fargate_refusal_ends_the_job_saying_why(deps: Any, key: str) -> None:
    deps.tasks["fargate"] = _Rejecting(SandboxRefused("fargate", "cannot make itself non-dumpable"))
    job_id, arn = _launched(deps, key)
    assert complete_from_event(deps, FakeTaskSandbox.event(job_id, arn)) == "error"
    assert deps.jobs.get(job_id).error.endswith("cannot make itself non-dumpable")


def test_runtimes_say_which_sandbox_offers_which_version(deps: Any) -> None:
    deps.sandboxes["lambda"].offered = SandboxOffer(sandbox="lambda", runtimes={"python3": "3.11", "node": "v20"})
    described = catalog.describe(deps)
    node = next(r for r in described["runtimes"] if r["name"] == "node")
    assert node["sandboxes"] == {"lambda": "v20", "fargate": "20"} and node["available"] and node["version"] == "v20"
    assert set(described["sandboxes"]) == {"lambda", "fargate"} and described["sandboxes"]["lambda"]["usable"]
