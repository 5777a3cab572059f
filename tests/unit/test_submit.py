"""Submitting jobs: validation, quotas, backpressure, idempotency, and a send that fails."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.config import TierPolicy, settings_from_env
from chalicelib.domain.errors import Conflict, QueueFull, QuotaExceeded, Unauthorized, ValidationFailed
from chalicelib.domain.jobs import JobStatus
from chalicelib.services.keys import create_key, revoke_key
from chalicelib.services.reaper import reap
from chalicelib.services.submit import submit_job
from tests.fakes import FakeClock, FakeSandbox, FakeTaskSandbox, MemoryQueue, make_deps

JOB = {"runtime": "python", "source": "print(1)"}


def test_accepted_job_is_queued_and_sent_with_a_per_key_group(deps: Any, key: str) -> None:
    accepted = submit_job(deps, key, {**JOB, "stdin": "hi"})
    job = deps.jobs.get(accepted.job.id)
    assert job.status is JobStatus.QUEUED and job.spec.runtime == "python3"
    assert job.spec.files[0].path == "main.py" and job.spec.stdin == "hi"
    tier, job_id, group, dedup = deps.queue.sent[0]
    assert (tier, job_id, dedup) == ("free", job.id, job.id)
    assert group.startswith(job.key_id + ".")
    assert accepted.position == 0
    assert accepted.usage is not None and accepted.usage.minute_remaining == 9


def test_a_keys_jobs_spread_over_as_many_groups_as_it_may_run_at_once(deps: Any, key: str) -> None:
    for _ in range(6):
        submit_job(deps, key, JOB)
    groups = [g for _, _, g, _ in deps.queue.sent]
    assert len(set(groups)) == deps.settings.tier("free").concurrency
    assert groups[0] == groups[2] == groups[4]  # round robin keeps each group in submission order


def test_position_counts_the_tier_jobs_ahead(deps: Any, key: str) -> None:
    other = create_key(deps, "globex", "free")[0]
    assert submit_job(deps, key, JOB).position == 0
    assert submit_job(deps, other, JOB).position == 1
    pro = create_key(deps, "initech", "pro")[0]
    assert submit_job(deps, pro, JOB).position == 0  # another tier's queue


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"runtime": "cobol", "source": "x"}, "runtime"),
        ({"runtime": "python", "source": ""}, "(body)"),
        ({"runtime": "python", "source": "x" * (64 * 1024 + 1)}, "source"),
        ({"runtime": "python", "source": "x", "stdin": "y" * (1024 * 1024 + 1)}, "stdin"),
        ({"runtime": "python", "source": "x", "limits": {"wall_time_s": 11}}, "limits.wall_time_s"),
        ({"runtime": "python", "source": "x", "limits": {"memory_mb": 512}}, "limits.memory_mb"),
        ({"runtime": "python", "source": "x", "limits": {"wall_time_s": -1}}, "limits.wall_time_s"),
        ({"runtime": "python", "source": "x", "bogus": 1}, "bogus"),
        ({"source": "x"}, "(body)"),
        ({"runtime": "python", "files": [{"path": "../etc/x", "content": ""}]}, "files.0.path"),
        ({"runtime": "python", "source": "x", "tests": [{"stdin": ""}] * 21}, "tests"),
        ({"runtime": "python", "source": "x", "sandbox": "fargate"}, "sandbox"),  # a local-only stage
        ({"runtime": "python", "source": "x", "sandbox": "gvisor"}, "sandbox"),
        # the totals every sandbox can take in one request (README "Limits")
        ({"runtime": "python", "source": "x", "tests": [{"expected_stdout": "y" * (1024 * 1024 + 1)}]}, "tests.0"),
        (
            {"runtime": "python", "source": "x", "tests": [{"stdin": "y" * 1024 * 1024, "expected_stdout": ""}] * 5},
            "tests",
        ),
        ({"runtime": "python", "source": "x", "stdin": "\x01" * 900_000}, "stdin"),  # 5.4 MB once JSON-encoded
        ({"tool": "wc", "args": ["-l"] * 64, "stdin": "", "limits": {}} | {"args": ["x" * 300] * 64}, "args"),
    ],
)
def test_invalid_jobs_get_422_with_the_field_and_cost_nothing(deps: Any, key: str, body: dict, field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        submit_job(deps, key, body)
    fields = [d["field"] for d in err.value.details]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields
    stored = next(iter(deps.keys.keys.values()))
    assert stored.quota.current(deps.clock.now()).m_n == 0  # nothing consumed
    assert deps.queue.sent == []


def test_unknown_and_revoked_keys_are_401(deps: Any, key: str) -> None:
    with pytest.raises(Unauthorized):
        submit_job(deps, "cr_nope", JOB)
    revoke_key(deps, next(iter(deps.keys.keys.values())).key_id)
    with pytest.raises(Unauthorized):
        submit_job(deps, key, JOB)


def test_per_minute_quota_then_reset(deps: Any, key: str) -> None:
    for _ in range(10):
        submit_job(deps, key, JOB)
    with pytest.raises(QuotaExceeded) as err:
        submit_job(deps, key, JOB)
    assert err.value.code == "rate_limited" and err.value.quota == "per_minute"
    assert err.value.retry_after_s >= 1
    assert err.value.usage is not None and err.value.usage.minute_remaining == 0
    deps.clock.advance(60)
    submit_job(deps, key, JOB)


def test_daily_quota(deps: Any) -> None:
    deps.settings.tiers["free"] = TierPolicy(**{**deps.settings.tier("free").model_dump(), "per_day": 3})
    key = create_key(deps, "acme", "free")[0]
    for _ in range(3):
        submit_job(deps, key, JOB)
        deps.clock.advance(61)
    with pytest.raises(QuotaExceeded) as err:
        submit_job(deps, key, JOB)
    assert err.value.code == "daily_quota_exceeded"


def test_full_queue_is_503_and_consumes_no_quota(deps: Any) -> None:
    deps.settings.tiers["free"] = TierPolicy(**{**deps.settings.tier("free").model_dump(), "queue_cap": 2})
    key = create_key(deps, "acme", "free")[0]
    submit_job(deps, key, JOB)
    submit_job(deps, key, JOB)
    with pytest.raises(QueueFull) as err:
        submit_job(deps, key, JOB)
    assert (err.value.tier, err.value.cap) == ("free", 2) and err.value.retry_after_s > 0
    # the refused submit was given back: the usage it reports counts only the two accepted ones
    assert err.value.usage is not None and err.value.usage.minute_remaining == 8
    stored = next(iter(deps.keys.keys.values()))
    assert stored.quota.m_n == 2


def test_idempotency_key_returns_the_same_job_and_charges_once(deps: Any, key: str) -> None:
    first = submit_job(deps, key, JOB, idempotency_key="abc")
    again = submit_job(deps, key, dict(JOB), idempotency_key="abc")
    assert again.job.id == first.job.id and again.replayed
    assert len(deps.queue.sent) == 1
    assert next(iter(deps.keys.keys.values())).quota.m_n == 1
    with pytest.raises(Conflict):
        submit_job(deps, key, {**JOB, "stdin": "other"}, idempotency_key="abc")


def test_refused_idempotent_request_can_be_retried(deps: Any, key: str) -> None:
    with pytest.raises(ValidationFailed):
        submit_job(deps, key, {"runtime": "cobol", "source": "x"}, idempotency_key="k1")
    # the claim was dropped with the refusal, so a corrected retry under the same key is not a conflict
    with pytest.raises(ValidationFailed):
        submit_job(deps, key, {"runtime": "cobol", "source": "x"}, idempotency_key="k1")


def test_send_failure_still_answers_202_and_the_reaper_redrives(key: str) -> None:
    deps = make_deps(settings_from_env({}), FakeClock())
    key = create_key(deps, "acme", "free")[0]
    queue: MemoryQueue = deps.queue  # type: ignore[assignment]
    queue.fail_sends = 1
    accepted = submit_job(deps, key, JOB)
    assert accepted.job.status is JobStatus.QUEUED and queue.sent == []
    deps.clock.advance(deps.settings.orphan_after_s + 1)
    actions = reap(deps)
    assert actions.get("queued_redriven") == 1
    assert queue.sent[0][1] == accepted.job.id and queue.sent[0][3] == accepted.job.id  # same dedup id


def test_a_job_for_the_lambda_sandbox_must_fit_one_invocation_with_its_tests() -> None:
    deps = make_deps(settings_from_env({"CODERUNNER_SANDBOX_MODE": "cloud"}))
    deps.sandboxes = {"lambda": FakeSandbox()}
    deps.tasks = {"fargate": FakeTaskSandbox()}
    key = create_key(deps, "acme", "pro")[0]
    tests = [{"stdin": "", "expected_stdout": ""}] * 20
    body = {"runtime": "python", "source": "x", "sandbox": "lambda", "limits": {"wall_time_s": 60}, "tests": tests}
    with pytest.raises(ValidationFailed) as err:
        submit_job(deps, key, body)
    assert err.value.details[0]["field"] == "sandbox" and "20 run" in err.value.details[0]["message"]
    assert submit_job(deps, key, {**body, "sandbox": "auto"}).job.status is JobStatus.QUEUED  # Fargate takes it
    assert submit_job(deps, key, {**body, "tests": tests[:5]}).job.status is JobStatus.QUEUED
