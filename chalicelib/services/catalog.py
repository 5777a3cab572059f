"""Which runtimes and tools exist, as the API validates against them (wraps the sandbox registry)."""

from __future__ import annotations

from typing import Any

from chalicelib.sandbox import runtimes

# Names clients commonly use for the same runtime (Piston and Judge0 users send these).
ALIASES = {"python": "python3", "py": "python3", "nodejs": "node", "javascript": "node", "js": "node", "sh": "bash"}


def canonical(name: str) -> str:
    return ALIASES.get(name.lower(), name)


def runtime(name: str) -> Any | None:
    return runtimes.get_runtime(canonical(name))


def tool(name: str) -> Any | None:
    return runtimes.get_tool(name)


def describe() -> dict[str, Any]:
    """`GET /v1/runtimes`: languages and tools with version, availability and default limits."""
    return {
        "runtimes": [r.model_dump(mode="json") for r in runtimes.list_runtimes()],
        "tools": [t.model_dump(mode="json") for t in runtimes.list_tools()],
    }
