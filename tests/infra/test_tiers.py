"""The tier list is defined once (chalicelib/deployment.py TIER_NAMES): every tier gets its queue, DLQ, alarms and
queue permissions in the template and on the local stack, and a tier that app.py has no functions for stops
`make package` with a message that says what to add."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from chalicelib.config import TIER_NAMES, Settings
from chalicelib.tier_resources import missing_functions, tier_resources
from infra import build_template, chalice_template, checks, state
from infra.chalice_template import ChaliceTemplate
from infra.state import queue_id, tier_id

pytestmark = pytest.mark.xdist_group("infra")

STAGE = "dev"
NEW = "team"


@pytest.fixture(scope="module")
def chalice() -> ChaliceTemplate:
    return chalice_template.generate(STAGE)


def with_tier(chalice: ChaliceTemplate, tier: str, like: str = "free") -> ChaliceTemplate:
    """What Chalice would generate once app.py declares `worker_<tier>` and `dlq_<tier>` like those of `like`."""
    template = copy.deepcopy(chalice.template)
    names = dict(chalice.function_names)
    for kind, dead_letter in (("Worker", False), ("Dlq", True)):
        source, target = f"{kind}{tier_id(like)}", f"{kind}{tier_id(tier)}"
        function = copy.deepcopy(template["Resources"][source])
        name = f"{kind.lower()}_{tier}"
        function["Properties"]["Handler"] = f"app.{name}"
        function["Properties"]["Role"] = {"Fn::GetAtt": [f"{target}Role", "Arn"]}
        (event,) = function["Properties"]["Events"].values()
        queue = event["Properties"]["Queue"]["Fn::Sub"]
        event["Properties"]["Queue"]["Fn::Sub"] = queue.replace(
            tier_resources(like).queue(STAGE, dead_letter), tier_resources(tier).queue(STAGE, dead_letter)
        )
        function["Properties"]["Events"] = {f"{target}SqsEventSource": event}
        template["Resources"][target] = function
        template["Resources"][f"{target}Role"] = copy.deepcopy(template["Resources"][f"{source}Role"])
        names[target] = name
    return ChaliceTemplate(template=template, function_names=names)


def test_tier_names_give_the_names_the_app_and_settings_use() -> None:
    settings = Settings(stage=STAGE)
    for tier in TIER_NAMES:
        needs = tier_resources(tier)
        assert needs.queue(STAGE) == settings.queue(tier)
        assert needs.queue(STAGE, dead_letter=True) == settings.queue(tier, dead_letter=True)
    assert (tier_resources("free").worker_function, tier_resources("free").dead_letter_function) == (
        "worker_free",
        "dlq_free",
    )
    for bad in ("Gold", "gold-plus", "gold_plus", "9lives", "", "x" * 21):
        with pytest.raises(ValueError, match="lowercase letters and digits"):
            tier_resources(bad)


def test_app_declares_every_tiers_functions() -> None:
    import app

    assert missing_functions(TIER_NAMES, app) == []
    found = missing_functions([NEW], SimpleNamespace(worker_team=lambda: None))
    assert found == [
        "tier 'team' (chalicelib/deployment.py TIER_NAMES) has no function 'dlq_team': app.py must declare it with "
        "@app.on_sqs_message(queue='code-runner-<stage>-team-dlq.fifo', name='dlq_team')"
    ]


def test_a_new_tier_gets_its_queues_alarms_and_permissions(chalice: ChaliceTemplate) -> None:
    tiers = (*TIER_NAMES, NEW)
    app_with_new_tier = with_tier(chalice, NEW)
    merge = build_template.merge_template(STAGE, app_with_new_tier, tiers)
    template = build_template.deep_merge(merge, app_with_new_tier.template)
    assert checks.problems(template) == []
    resources = template["Resources"]
    queue, dlq = resources[queue_id(NEW)]["Properties"], resources[queue_id(NEW, dead_letter=True)]["Properties"]
    assert queue["QueueName"] == {"Fn::Sub": "code-runner-${Stage}-team.fifo"}
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [queue_id(NEW, dead_letter=True), "Arn"]}
    assert dlq["QueueName"] == {"Fn::Sub": "code-runner-${Stage}-team-dlq.fifo"}
    alarms = {lid.removeprefix("Team") for lid in resources if lid.startswith("Team") and lid.endswith("Alarm")}
    assert alarms == {
        "DeadLetterQueueAlarm",
        "QueueAgeAlarm",
        "WorkerErrorRateAlarm",
        "WorkerThrottlesAlarm",
        "FargateLaunchFailuresAlarm",
    }
    # Every function that may send to or read a queue may do so on the new tier's queues too.
    for role_id in ("WorkerFreeRole", "WorkerTeamRole", "ApiHandlerRole", "CleanupRole"):
        (statement,) = [
            s
            for p in resources[role_id]["Properties"]["Policies"]
            for s in p["PolicyDocument"]["Statement"]
            if s.get("Sid") == "TierQueuesAndDeadLetterQueues"
        ]
        assert {"Fn::GetAtt": [queue_id(NEW), "Arn"]} in statement["Resource"], role_id
        assert {"Fn::GetAtt": [queue_id(NEW, dead_letter=True), "Arn"]} in statement["Resource"], role_id
    assert "${TeamQueue.QueueName}" in resources["OperationsDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    assert merge["Outputs"]["TeamQueueUrl"] == {"Value": {"Ref": "TeamQueue"}}


def test_a_tier_without_its_functions_stops_make_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build_template, "TIER_NAMES", (*TIER_NAMES, NEW))
    out = tmp_path / "merge-template.json"
    assert build_template.main(["--stage", STAGE, "--out", str(out)]) == 1
    errors = capsys.readouterr().err
    assert "tier 'team' (chalicelib/deployment.py TIER_NAMES) has no function 'worker_team'" in errors
    assert "@app.on_sqs_message(queue=<code-runner-dev-team.fifo>, name='worker_team')" in errors
    assert "no function 'dlq_team'" in errors
    assert not out.exists()


def test_functions_of_a_tier_no_longer_listed_stop_make_package(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(build_template, "TIER_NAMES", tuple(t for t in TIER_NAMES if t != "enterprise"))
    assert build_template.main(["--stage", STAGE, "--out", str(tmp_path / "m.json")]) == 1
    errors = capsys.readouterr().err
    assert "app.py `worker_enterprise` listens to code-runner-dev-enterprise.fifo, which is no tier's queue" in errors


def test_the_local_stack_creates_a_new_tiers_queues(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.adapters.aws import client
    from devtools.resources import create_resources

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    stage = "t" + uuid.uuid4().hex[:10]
    created = create_resources(stage, tiers=(*TIER_NAMES, NEW))
    assert created[queue_id(NEW)] == tier_resources(NEW).queue(stage)
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=tier_resources(NEW).queue(stage))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(
        ":" + tier_resources(NEW).queue(stage, dead_letter=True)
    )
    template = state.state_template(STAGE, (*TIER_NAMES, NEW))
    assert attributes["VisibilityTimeout"] == str(template["Parameters"]["VisibilityTimeout"]["Default"])


def test_queue_visibility_follows_the_functions_timeouts(tmp_path: Path) -> None:
    config: dict[str, Any] = json.loads(state.CHALICE_CONFIG.read_text())
    config["stages"][STAGE].setdefault("lambda_functions", {})["worker_pro"] = {"lambda_timeout": 600}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert state.function_timeout("worker_pro", STAGE, path) == 600  # the stage's own setting wins
    assert state.function_timeout("worker_free", STAGE, path) == 900  # then the top-level function's
    assert state.function_timeout("dlq_free", STAGE, path) == 60  # then Chalice's default
    parameters = state.state_template(STAGE)["Parameters"]
    assert parameters["VisibilityTimeout"]["Default"] == 6 * 900
    assert parameters["DeadLetterVisibilityTimeout"]["Default"] == 6 * 60
