"""The API's 500s are alarmed on: the metrics app.py emits (BackendRejected, UnhandledErrors) are the ones the
template's alarms sum, over every dimension the app gives them."""

from __future__ import annotations

import pytest

from chalicelib.adapters.metrics import NAMESPACE
from chalicelib.config import TIER_NAMES
from chalicelib.metric_names import BACKEND_REJECTED, UNHANDLED_ERRORS
from infra import alarms, build_template, chalice_template, checks

pytestmark = pytest.mark.xdist_group("infra")


def test_each_500_metric_has_an_alarm_in_the_template() -> None:
    chalice = chalice_template.generate("dev")
    template = build_template.deep_merge(build_template.merge_template("dev", chalice, TIER_NAMES), chalice.template)
    assert checks.problems(template) == []
    queries = {}
    for logical_id in ("ApiBackendRejectedAlarm", "ApiUnhandledErrorsAlarm"):
        props = template["Resources"][logical_id]["Properties"]
        (query,) = props["Metrics"]
        assert query["ReturnData"] and query["Period"] == 300
        assert props["Threshold"] == 0 and props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
        queries[logical_id] = query["Expression"]
    # No SCHEMA(...): a Metrics Insights query over the namespace sums every dimension set the app emits.
    assert queries == {
        "ApiBackendRejectedAlarm": f'SELECT SUM({BACKEND_REJECTED}) FROM "{NAMESPACE}"',
        "ApiUnhandledErrorsAlarm": f'SELECT SUM({UNHANDLED_ERRORS}) FROM "{NAMESPACE}"',
    }
    assert set(alarms.app_error_alarms()) == set(queries)
