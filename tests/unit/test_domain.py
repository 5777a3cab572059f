"""The job state machine and the quota windows, on plain values."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.config import DEFAULT_TIERS
from chalicelib.domain.errors import IllegalTransition, QuotaExceeded
from chalicelib.domain.jobs import ALLOWED, TERMINAL, JobStatus, check_transition, status_for
from chalicelib.domain.quotas import QuotaState, charged, day_reset, minute_reset, minute_window, refunded
from chalicelib.sandbox.models import ExecutionResult, FailureReason, TestResult, TestSummary, TestVerdict


def test_terminal_states_allow_nothing() -> None:
    for status in TERMINAL:
        for new in JobStatus:
            with pytest.raises(IllegalTransition):
                check_transition(status, new)


def test_lifecycle_paths() -> None:
    check_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    check_transition(JobStatus.QUEUED, JobStatus.CANCELLED)
    check_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    check_transition(JobStatus.RUNNING, JobStatus.QUEUED)  # platform retry
    with pytest.raises(IllegalTransition):
        check_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)  # never finishes without running


@given(st.lists(st.sampled_from(list(JobStatus)), max_size=12))
def test_any_walk_through_the_machine_ends_once(steps: list[JobStatus]) -> None:
    """Whatever order of attempted changes, a job never leaves a terminal state."""
    current = JobStatus.QUEUED
    for new in steps:
        if new in ALLOWED[current]:
            current = new
        else:
            with pytest.raises(IllegalTransition):
                check_transition(current, new)
    if current.terminal:
        assert ALLOWED[current] == frozenset()


@pytest.mark.parametrize(
    ("reason", "status"),
    [
        (None, JobStatus.SUCCEEDED),
        (FailureReason.EXIT_CODE, JobStatus.FAILED),
        (FailureReason.SIGNAL, JobStatus.FAILED),
        (FailureReason.MEMORY_LIMIT, JobStatus.FAILED),
        (FailureReason.OUTPUT_LIMIT, JobStatus.FAILED),
        (FailureReason.WALL_TIME, JobStatus.TIMED_OUT),
        (FailureReason.CPU_TIME, JobStatus.TIMED_OUT),
        (FailureReason.CANCELLED, JobStatus.CANCELLED),
    ],
)
def test_status_for_result(reason: FailureReason | None, status: JobStatus) -> None:
    assert status_for(ExecutionResult(reason=reason, exit_code=0 if reason is None else 1)) is status


def test_graded_job_fails_when_a_test_fails() -> None:
    case = TestResult(verdict=TestVerdict.WRONG_ANSWER)
    result = ExecutionResult(exit_code=0, tests=TestSummary(total=2, accepted=1, cases=[case, case]))
    assert status_for(result) is JobStatus.FAILED


PRO = DEFAULT_TIERS["pro"]
FREE = DEFAULT_TIERS["free"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=3 * 86400), min_size=1, max_size=300))
def test_windows_never_admit_more_than_the_limits(offsets: list[float]) -> None:
    """Admissions per minute and per UTC day never exceed the tier's limits, and a request is refused only
    when one of them is used up (so the limit is exact, not approximate)."""
    base = 1_800_000_000.0
    state = QuotaState()
    per_minute: dict[int, int] = {}
    per_day: dict[str, int] = {}
    for t in sorted(base + o for o in offsets):
        mw, dw = minute_window(t), state.current(t).d_win
        try:
            state = charged(state, t, FREE)
        except QuotaExceeded as refused:
            assert per_minute.get(mw, 0) >= FREE.per_minute or per_day.get(dw, 0) >= FREE.per_day
            assert refused.retry_after_s >= 1
            reset = minute_reset(t) if refused.quota == "per_minute" else day_reset(t)
            assert t + refused.retry_after_s >= reset
            assert refused.usage is not None and refused.usage.minute_reset == minute_reset(t)
            continue
        per_minute[mw] = per_minute.get(mw, 0) + 1
        per_day[dw] = per_day.get(dw, 0) + 1
    assert all(n <= FREE.per_minute for n in per_minute.values())
    assert all(n <= FREE.per_day for n in per_day.values())


def test_daily_quota_names_itself_and_resets_at_utc_midnight() -> None:
    t = 1_800_000_000.0
    state = QuotaState(minute_window(t), 0, QuotaState().current(t).d_win, FREE.per_day)
    with pytest.raises(QuotaExceeded) as refused:
        charged(state, t, FREE)
    assert refused.value.code == "daily_quota_exceeded" and refused.value.quota == "per_day"
    assert refused.value.details["limit"] == FREE.per_day
    assert charged(state, day_reset(t) + 1, FREE).d_n == 1


@given(st.integers(0, 50), st.integers(0, 50))
def test_refund_gives_back_one_and_never_goes_negative(m: int, d: int) -> None:
    t = 1_800_000_000.0
    state = QuotaState(minute_window(t), m, QuotaState().current(t).d_win, d)
    after = refunded(state, minute_window(t), state.d_win)
    assert after.m_n == max(0, m - 1) and after.d_n == max(0, d - 1)
    # a charge from another window gives nothing back in this one
    assert refunded(state, minute_window(t) - 1, "1999-01-01") == state


def test_callback_url_is_checked_for_its_form_here_and_for_its_addresses_at_submit() -> None:
    import pydantic

    from chalicelib.domain.requests import SubmitRequest

    ok = SubmitRequest.model_validate({"runtime": "python", "source": "1", "callback_url": "https://x.test/cb"})
    assert ok.callback_url == "https://x.test/cb"
    for bad, reason in [
        ("https://user:pw@x.test/", "credentials"),
        ("https:///nohost", "no host"),
        ("ftp://x", "https"),
    ]:
        with pytest.raises(pydantic.ValidationError, match=reason):
            SubmitRequest.model_validate({"runtime": "python", "source": "1", "callback_url": bad})


def test_settings_refuse_a_tier_whose_workers_one_key_could_fill() -> None:
    from chalicelib.config import settings_from_env

    assert settings_from_env({}).capacity("free") == 4
    with pytest.raises(ValueError, match="one key's backlog can starve the tier"):
        settings_from_env({"CODERUNNER_TIERS_JSON": '{"free": {"concurrency": 4}}'})


def test_settings_refuse_a_tier_that_is_not_deployed() -> None:
    from chalicelib.config import settings_from_env

    gold = '{"gold": {"per_minute": 1, "per_day": 1, "concurrency": 1, "max_wall_time_s": 1, "max_memory_mb": 64, '
    gold += '"queue_cap": 1, "weight": 1}}'
    with pytest.raises(ValueError, match="tier 'gold' has no queue, DLQ, workers or alarms"):
        settings_from_env({"CODERUNNER_TIERS_JSON": gold})


def test_every_setting_is_read_from_the_environment_with_one_prefix() -> None:
    from chalicelib.config import Settings, settings_from_env

    given = {"stage": "qa", "max_attempts": "5", "fargate_subnets": "subnet-a, subnet-b", "sandbox_mode": "cloud"}
    settings = settings_from_env({f"CODERUNNER_{k.upper()}": v for k, v in given.items()})
    assert (settings.stage, settings.max_attempts, settings.sandbox_mode) == ("qa", 5, "cloud")
    assert settings.fargate_subnets == ["subnet-a", "subnet-b"]
    assert settings_from_env({"CODERUNNER_TIERS_JSON": '{"free": {"per_minute": 5}}'}).tier("free").per_minute == 5
    assert set(Settings.model_fields) >= {"lease_grace_s", "ip_per_minute", "run_log"}  # all plain fields
    with pytest.raises(ValueError):
        settings_from_env({"CODERUNNER_MAX_ATTEMPTS": "many"})
