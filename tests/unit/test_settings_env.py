"""The settings read the CODERUNNER_ environment themselves (chalicelib/config.py), as pydantic-settings' environment
source did: these are the rules it followed that the app and its operators rely on."""

from __future__ import annotations

import pytest

from chalicelib.config import Settings, SettingsError, settings_from_env


def test_names_match_without_regard_to_case_and_unknown_variables_are_ignored() -> None:
    settings = settings_from_env({"coderunner_max_attempts": "7", "CodeRunner_Stage": "qa", "CODERUNNER_NOPE": "x"})
    assert (settings.max_attempts, settings.stage) == (7, "qa")


def test_the_tier_table_is_json_and_null_leaves_the_defaults() -> None:
    assert settings_from_env({"CODERUNNER_TIERS_JSON": "null"}).tiers == settings_from_env({}).tiers
    assert settings_from_env({"CODERUNNER_TIERS": '{"free": {"weight": 2}}'}).tier("free").weight == 1  # not its name
    with pytest.raises(SettingsError, match='error parsing value for field "tiers"'):
        settings_from_env({"CODERUNNER_TIERS_JSON": "{not json"})


def test_lists_are_comma_separated_and_never_json() -> None:
    assert settings_from_env({"CODERUNNER_FARGATE_SUBNETS": " a, b,,c "}).fargate_subnets == ["a", "b", "c"]
    assert settings_from_env({"CODERUNNER_FARGATE_SUBNETS": '["x"]'}).fargate_subnets == ['["x"]']


def test_a_bad_value_names_its_field() -> None:
    with pytest.raises(ValueError, match="max_attempts\n  Input should be a valid integer"):
        settings_from_env({"CODERUNNER_MAX_ATTEMPTS": "many"})
    with pytest.raises(ValueError, match="sandbox_mode\n  Input should be 'local' or 'cloud'"):
        settings_from_env({"CODERUNNER_SANDBOX_MODE": "both"})


def test_settings_however_built_read_the_process_environment_under_the_values_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODERUNNER_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("CODERUNNER_STAGE", "from-env")
    settings = Settings(stage="given")
    assert (settings.stage, settings.max_attempts) == ("given", 9)
    assert settings_from_env().max_attempts == 9
    assert Settings.model_validate({}).max_attempts == 9  # as under pydantic-settings: the environment beneath
    assert settings_from_env({"CODERUNNER_MAX_ATTEMPTS": "4"}).max_attempts == 4
