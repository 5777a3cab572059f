"""chalicelib/deployment.py reads, without pydantic, the numbers app.py's decorators need at import; the settings
read the same environment. The two must agree wherever deployment.py answers, and defer to the settings elsewhere."""

from __future__ import annotations

import pytest

from chalicelib import deployment
from chalicelib.config import DEFAULT_TIERS, TIER_NAMES, settings_from_env

ENVIRONMENTS = [
    {},
    {"CODERUNNER_WORKERS_PER_WEIGHT": "8"},
    {"coderunner_workers_per_weight": "5"},  # the settings match names without regard to case
    {"CODERUNNER_TIERS_JSON": '{"free": {"weight": 3}, "pro": {"per_minute": 5}}'},
    {"CODERUNNER_TIERS_JSON": '{"enterprise": {"weight": 20}}', "CODERUNNER_WORKERS_PER_WEIGHT": "3"},
    {"CODERUNNER_TIERS_JSON": "{}", "CODERUNNER_STAGE": "qa", "OTHER": "x"},
]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_worker_capacity_is_the_settings_capacity(env: dict[str, str]) -> None:
    settings = settings_from_env(env)
    for tier in TIER_NAMES:
        assert deployment.worker_capacity(tier, env) == settings.capacity(tier), (tier, env)


@pytest.mark.parametrize(
    "env",
    [
        {"CODERUNNER_WORKERS_PER_WEIGHT": " 8"},
        {"CODERUNNER_WORKERS_PER_WEIGHT": "many"},
        {"CODERUNNER_WORKERS_PER_WEIGHT": "0"},
        {"CODERUNNER_TIERS_JSON": "not json"},
        {"CODERUNNER_TIERS_JSON": "[]"},
        {"CODERUNNER_TIERS_JSON": '{"free": [["weight", 2]]}'},
        {"CODERUNNER_TIERS_JSON": '{"free": {"weight": "2"}}'},
        {"CODERUNNER_TIERS_JSON": '{"free": {"weight": true}}'},
        {"CODERUNNER_TIERS_JSON": '{"free": {"weight": 0}}'},
    ],
)
def test_what_it_cannot_read_with_certainty_is_left_to_the_settings(env: dict[str, str]) -> None:
    assert deployment.worker_capacity("free", env) is None


def test_the_default_tier_table_is_the_settings_default() -> None:
    assert set(deployment.DEFAULT_TIER_TABLE) == set(TIER_NAMES) == set(DEFAULT_TIERS)
    for name, limits in deployment.DEFAULT_TIER_TABLE.items():
        assert DEFAULT_TIERS[name].model_dump() == {"name": name, **limits}
    assert settings_from_env({}).workers_per_weight == deployment.DEFAULT_WORKERS_PER_WEIGHT


def test_app_sizes_each_worker_with_the_settings_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    import app

    monkeypatch.setenv("CODERUNNER_TIERS_JSON", '{"free": [["weight", 2]]}')  # only the settings read this
    app.config.get_settings.cache_clear()
    try:
        assert (
            app._capacity("free")
            == settings_from_env({"CODERUNNER_TIERS_JSON": '{"free": [["weight", 2]]}'}).capacity("free")
            == 8
        )
        monkeypatch.setenv("CODERUNNER_TIERS_JSON", '{"free": {"weight": 3}}')
        assert app._capacity("free") == 12  # read by deployment.py: the cached settings are not asked
    finally:
        app.config.get_settings.cache_clear()
