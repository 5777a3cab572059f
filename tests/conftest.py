"""Shared fixtures. Nothing here can reach real AWS: fake credentials, and a moto server on 127.0.0.1."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
os.environ.update(FAKE_AWS)
for _var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_var, None)


# The longest units of work first. `make test` runs xdist with `--dist loadgroup --no-loadscope-reorder`, which
# hands out work units (an xdist_group, or one test) in collection order whenever a worker is nearly idle: so the
# long ones start at once, side by side, and short tests fill in around them instead of one long group starting
# last and running alone at the end. Measured under `make test`: the e2e group (the session's stack), the local
# sandbox group, the emulators group (the cloud attack suite), then chaos and fuzz (each starts its own stack).
_LONG_GROUPS = ("e2e", "sandbox", "emulators")
_LONG_FILES = ("tests/e2e/test_chaos.py", "tests/e2e/test_fuzz.py")


def _schedule_rank(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    if group is not None and group.args[0] in _LONG_GROUPS:
        return _LONG_GROUPS.index(group.args[0])
    return len(_LONG_GROUPS) + (item.nodeid.split("::")[0] not in _LONG_FILES)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_schedule_rank)  # stable: within a rank, collection order


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server per test process (atomic single-item conditional updates, unlike mock_aws)."""
    from devtools.motoserver import start_moto
    from devtools.stack import free_port

    port = free_port()
    server = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def stack_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Fresh queues and tables (a unique stage) on the moto server, and the app wired to them."""
    from chalicelib import bootstrap
    from chalicelib.services import estimates
    from devtools.resources import create_resources

    stage = "t" + uuid.uuid4().hex[:10]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("CODERUNNER_STAGE", stage)
    monkeypatch.setenv("CODERUNNER_SANDBOX_MODE", "local")
    bootstrap.reset()
    estimates.clear_cache()
    names = create_resources(stage)
    monkeypatch.setenv("CODERUNNER_RESULTS_BUCKET", names["ResultsBucket"])
    bootstrap.reset()
    yield {"stage": stage, "names": names, "endpoint": moto_endpoint}
    bootstrap.reset()
