"""Key scopes: set by an operator, enforced at submit (403 naming the scope), free for a refused submit."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain import scopes
from chalicelib.domain.errors import Forbidden, ValidationFailed
from chalicelib.services.keys import create_key, set_scopes
from chalicelib.services.queries import usage
from chalicelib.services.submit import submit_batch, submit_job

PYTHON = {"runtime": "python", "source": "print(1)"}
SORT = {"tool": "sort", "args": ["-n"], "stdin": "2\n1\n"}
NODE = {"runtime": "node", "source": "console.log(1)"}


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ([], ("*",)),
        (["*", "tools"], ("*",)),
        (["tools", "tools", " runtime:python "], ("runtime:python3", "tools")),  # aliases become canonical
        (["tool:sort", "runtimes"], ("runtimes", "tool:sort")),
    ],
)
def test_scopes_as_stored(deps: Any, given: list[str], stored: tuple[str, ...]) -> None:
    _, key = create_key(deps, "acme", "free", given)
    assert key.scopes == stored and deps.keys.get(key.key_hash).scopes == stored


@pytest.mark.parametrize("bad", ["tool", "everything", "tool:", "tool:rm", "runtime:cobol", "Tools", "tool:sort;ls"])
def test_a_scope_that_names_nothing_is_refused_at_creation(deps: Any, bad: str) -> None:
    with pytest.raises(ValidationFailed):
        create_key(deps, "acme", "free", [bad])


@pytest.mark.parametrize(
    ("key_scopes", "job", "allowed"),
    [
        (["*"], PYTHON, True),
        (["tools"], SORT, True),
        (["tools"], PYTHON, False),
        (["tool:sort"], SORT, True),
        (["tool:wc"], SORT, False),
        (["runtimes"], PYTHON, True),
        (["runtimes"], SORT, False),
        (["runtime:python3", "runtime:node"], NODE, True),
        (["runtime:python3"], NODE, False),
    ],
)
def test_submit_enforces_the_keys_scopes(deps: Any, key_scopes: list[str], job: Any, allowed: bool) -> None:
    plain, _ = create_key(deps, "acme", "free", key_scopes)
    if allowed:
        assert submit_job(deps, plain, job).job.status.value == "queued"
        return
    with pytest.raises(Forbidden) as err:
        submit_job(deps, plain, job)
    kind, name = ("tool", "sort") if "tool" in job else ("runtime", "python3" if job is PYTHON else "node")
    assert err.value.details == {"needed": [f"{kind}s", f"{kind}:{name}"], "scopes": sorted(key_scopes)}
    assert f"{kind}:{name}" in err.value.message and all(s in err.value.message for s in key_scopes)


def test_a_refused_submit_consumes_nothing(deps: Any) -> None:
    plain, key = create_key(deps, "acme", "free", ["tools"])
    for _ in range(12):  # more than the free tier's 10 a minute: none of them counts
        with pytest.raises(Forbidden):
            submit_job(deps, plain, PYTHON, idempotency_key="same")
    assert deps.jobs.jobs == {} and deps.queue.sent == [] and deps.counters.tier_counts("free") == (0, 0)
    assert usage(deps, deps.keys.get(key.key_hash)).per_minute.used == 0
    assert submit_job(deps, plain, SORT, idempotency_key="same").job.spec.tool == "sort"  # the key was not kept


def test_a_batch_refuses_each_job_outside_the_scopes_on_its_own(deps: Any) -> None:
    plain, _ = create_key(deps, "acme", "free", ["tool:sort"])
    outcomes = submit_batch(deps, plain, {"jobs": [SORT, PYTHON, SORT]})
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "Forbidden", "Accepted"]


def test_usage_shows_the_scopes_and_an_operator_can_change_them(deps: Any) -> None:
    plain, key = create_key(deps, "acme", "free", ["tools"])
    assert usage(deps, deps.keys.get(key.key_hash)).scopes == ["tools"]
    set_scopes(deps, key.key_id, [])
    assert usage(deps, deps.keys.get(key.key_hash)).scopes == ["*"]
    assert submit_job(deps, plain, PYTHON).job.spec.runtime == "python3"


def test_the_domain_rule() -> None:
    assert scopes.allows(("*",), "runtime", "bash")
    assert scopes.allows(("tools",), "tool", "wc") and not scopes.allows(("tools",), "runtime", "bash")
    assert scopes.needed("tool", "wc") == ("tools", "tool:wc")
