"""The local stack as a subprocess, shared by the e2e tests of one session (see stackproc.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stackproc import Api, StackProcess, start_stack

# The stack's own AWS secret (which the emulated sandbox function gets as its role's): no job may ever see it.
PLANTED_SECRET = f"planted-stack-secret-{uuid.uuid4().hex}"


def _run(workdir: Path, **kwargs: object) -> Iterator[StackProcess]:
    stack = start_stack(workdir, **kwargs)  # type: ignore[arg-type]
    try:
        yield stack
    finally:
        code = stack.stop()
        assert code == 0, f"the stack did not stop cleanly ({code}):\n{stack.tail()}"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """One stack (one worker process, fast reaper) for the e2e session."""
    yield from _run(tmp_path_factory.mktemp("stack"), settings={"CODERUNNER_LOCAL_SECRET_ACCESS_KEY": PLANTED_SECRET})


@pytest.fixture(scope="session")
def guarded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    """A stack with a small per-IP limit (every local request comes from 127.0.0.1)."""
    yield from _run(tmp_path_factory.mktemp("guarded"), settings={"CODERUNNER_IP_PER_MINUTE": "20"})


@pytest.fixture
def api(stack: StackProcess) -> Api:
    """The API with no key."""
    return stack.api()
