"""The operator CLI (`coderunner keys ...`) against the moto server, checked through the HTTP API."""

from __future__ import annotations

import io
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib.services.keys import hash_key
from devtools.cli import main
from tests.integration.helpers import body

JOB = {"runtime": "bash", "source": "echo hi"}


@pytest.fixture
def client(stack_env: dict[str, Any]) -> Any:
    from app import app

    with Client(app) as c:
        yield c


def cli(*argv: str) -> tuple[int, Any]:
    out = io.StringIO()
    code = main(["--json", *argv], out=out)
    text = out.getvalue().strip()
    return code, json.loads(text) if text else None


def submit(client: Any, key: str) -> Any:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return client.http.post("/v1/jobs", headers=headers, body=json.dumps(JOB))


def test_created_key_works_then_revoked_key_is_401_at_once(client: Any, stack_env: dict[str, Any]) -> None:
    code, created = cli("keys", "create", "--owner", "acme", "--tier", "pro")
    assert code == 0 and created["key"].startswith("cr_") and created["tier"] == "pro"
    assert submit(client, created["key"]).status_code == 202

    code, listed = cli("keys", "list", "--owner", "acme")
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert "key" not in listed[0] and listed[0]["submitted"] == 1
    # Only the hash is stored: the plain key appears nowhere in the table.
    from chalicelib.adapters.aws import client as aws_client

    items = aws_client("dynamodb").scan(TableName=f"code-runner-{stack_env['stage']}-keys")["Items"]
    assert created["key"] not in json.dumps(items) and hash_key(created["key"]) in json.dumps(items)

    code, revoked = cli("keys", "revoke", created["key_id"])
    assert code == 0 and revoked["revoked"] is True
    resp = submit(client, created["key"])
    assert resp.status_code == 401 and body(resp)["error"]["code"] == "unauthorized"


def test_set_tier_changes_the_limits_the_key_gets(client: Any) -> None:
    _, created = cli("keys", "create", "--owner", "beta", "--tier", "free")
    headers = {"Authorization": f"Bearer {created['key']}"}
    assert body(client.http.get("/v1/usage", headers=headers))["tier"] == "free"
    code, moved = cli("keys", "set-tier", created["key_id"], "enterprise")
    assert code == 0 and moved["tier"] == "enterprise"
    assert body(client.http.get("/v1/usage", headers=headers))["tier"] == "enterprise"


def test_bad_input_is_a_clear_error(stack_env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("keys", "create", "--owner", "acme", "--tier", "platinum")[0] == 2
    assert "unknown tier 'platinum'" in capsys.readouterr().err
    assert cli("keys", "revoke", "key_000000000000")[0] == 2
    assert "no key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "list", "--owner", "gamma", "--json"],
        ["--json", "keys", "list", "--owner", "gamma"],
        ["keys", "--json", "list", "--owner", "gamma"],
    ],
)
def test_options_work_before_or_after_the_command_and_times_are_iso(stack_env: dict[str, Any], argv: list[str]) -> None:
    """Through the one `coderunner` entry point (the client's), which hands `keys` to the operator CLI."""
    from coderunner_client.cli import Io
    from coderunner_client.cli import cli as entry_point

    cli("keys", "create", "--owner", "gamma", "--tier", "free")
    out, err = io.StringIO(), io.StringIO()
    assert entry_point(argv, Io(out, err, io.StringIO()), {}, Path("/")) == 0, err.getvalue()
    [listed] = json.loads(out.getvalue())
    created = datetime.fromisoformat(listed["created_at"])  # ISO 8601 like the API, not a Unix time
    assert listed["created_at"].endswith("Z") and created.tzinfo is not None
    assert abs(created.timestamp() - time.time()) < 3600


def test_set_webhook_sets_checks_and_clears_a_keys_default_url(stack_env: dict[str, Any]) -> None:
    _, created = cli("keys", "create", "--owner", "acme", "--tier", "pro")
    code, shown = cli("keys", "set-webhook", created["key_id"], "https://93.184.216.34/hooks")
    assert code == 0 and shown == {"key_id": created["key_id"], "url": "https://93.184.216.34/hooks"}
    assert cli("keys", "set-webhook", created["key_id"], "https://10.0.0.1/x")[0] == 2  # private: refused
    assert cli("keys", "set-webhook", "key_nope", "https://93.184.216.34/")[0] == 2
    assert cli("keys", "set-webhook", created["key_id"], "--clear") == (0, {"key_id": created["key_id"], "url": None})
