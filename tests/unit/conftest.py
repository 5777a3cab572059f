"""Fixtures shared by the unit tests: the app wired to in-memory fakes, and a free-tier key."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.services.keys import create_key
from tests.fakes import make_deps


@pytest.fixture
def deps() -> Any:
    return make_deps()


@pytest.fixture
def key(deps: Any) -> str:
    return create_key(deps, "acme", "free")[0]
