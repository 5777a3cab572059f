"""Key scopes: what a key may run. An operator restricts a key when it is created (`--scope`); a key without
restriction has the scope `*`.

    *                  everything (the default)
    tools              every registered tool          tool:<name>       one tool (e.g. tool:sort)
    runtimes           every runtime                  runtime:<name>    one runtime (e.g. runtime:python3)

A tool-only key is what a product that lets an AI agent (or any untrusted caller) run commands should hold:
each tool's argument grammar then bounds everything the key can make the platform do, where a runtime runs
arbitrary code.
"""

from __future__ import annotations

import re
from typing import Literal

EVERYTHING = "*"
Kind = Literal["runtime", "tool"]
_SCOPE = re.compile(r"\*|tools|runtimes|(tool|runtime):[a-z0-9][a-z0-9._+-]{0,31}")


def parse(given: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes as stored: checked, deduplicated, sorted; `*` alone when nothing restricts the key.
    ValueError names the first scope that is not one (see the module docstring for the grammar)."""
    scopes = set()
    for raw in given:
        scope = raw.strip()
        if not _SCOPE.fullmatch(scope):
            raise ValueError(f"'{scope}' is not a scope: use *, tools, runtimes, tool:<name> or runtime:<name>")
        scopes.add(scope)
    if not scopes or EVERYTHING in scopes:
        return (EVERYTHING,)
    return tuple(sorted(scopes))


def needed(kind: Kind, name: str) -> tuple[str, str]:
    """The scopes that allow running `name` (canonical): the kind's wide one and its own."""
    return (f"{kind}s", f"{kind}:{name}")


def allows(scopes: tuple[str, ...], kind: Kind, name: str) -> bool:
    """Whether a key with `scopes` may run the runtime or tool `name` (canonical name)."""
    return EVERYTHING in scopes or any(scope in scopes for scope in needed(kind, name))
