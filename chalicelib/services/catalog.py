"""Which runtimes and tools exist, and which sandbox of this stage offers which (wraps the sandbox registry).

Each configured sandbox says what it has (`offer()` on its port): the local sandbox probes this host, the
Lambda sandbox is probed inside the function (cached), the Fargate sandbox runs the same image as the Lambda
function. A runtime is available when a usable sandbox offers it, never because the API's own host has it.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.sandbox import runtimes
from chalicelib.sandbox.models import SandboxOffer
from chalicelib.sandbox.selection import KINDS, may_run
from chalicelib.services.deps import Deps

log = logging.getLogger(__name__)

# Names clients commonly use for the same runtime (Piston and Judge0 users send these).
ALIASES = {"python": "python3", "py": "python3", "nodejs": "node", "javascript": "node", "js": "node", "sh": "bash"}


def canonical(name: str) -> str:
    return ALIASES.get(name.lower(), name)


def runtime(name: str) -> Any | None:
    return runtimes.get_runtime(canonical(name))


def tool(name: str) -> Any | None:
    return runtimes.get_tool(name)


def offers(deps: Deps) -> dict[str, SandboxOffer]:
    """What each configured sandbox offers now, in auto's order of preference."""
    ports: dict[str, Any] = {**deps.sandboxes, **deps.tasks}
    found: dict[str, SandboxOffer] = {}
    for kind in [k for k in KINDS if k in ports] + [k for k in ports if k not in KINDS]:
        try:
            found[kind] = ports[kind].offer()
        except Exception as exc:  # noqa: BLE001 - one sandbox that cannot answer must not hide the others
            log.warning("sandbox offer failed", extra={"sandbox": kind, "error": str(exc)})
            found[kind] = SandboxOffer(sandbox=kind, reachable=False, refusal=f"could not be asked: {exc}")
    return found


def offered(found: dict[str, SandboxOffer], runtime_name: str | None, tool_name: str | None) -> bool:
    """True when a sandbox may run the runtime (or tool): it has it and does not refuse, or could not be asked."""
    return any(may_run(offer, runtime_name, tool_name) for offer in found.values())


def _entry(info: Any, found: dict[str, SandboxOffer], kind: str) -> dict[str, Any]:
    by = {name: getattr(offer, kind).get(info.name) for name, offer in found.items()}
    by = {name: version for name, version in by.items() if version is not None}
    usable = [name for name in by if found[name].usable]
    entry = info.model_dump(mode="json")
    entry["available"] = bool(usable)
    entry["version"] = by[usable[0]] if usable else entry["version"]
    entry["sandboxes"] = by
    return entry


def describe(deps: Deps) -> dict[str, Any]:
    """`GET /v1/runtimes`: languages and tools, each with the version every sandbox offers (`sandboxes`), the
    default limits, and per sandbox its layers here and whether it refuses to run user code (and why)."""
    found = offers(deps)
    return {
        "runtimes": [_entry(info, found, "runtimes") for info in runtimes.list_runtimes()],
        "tools": [_entry(info, found, "tools") for info in runtimes.list_tools()],
        "sandboxes": {
            name: offer.model_dump(mode="json", exclude={"runtimes", "tools", "sandbox"}) | {"usable": offer.usable}
            for name, offer in found.items()
        },
    }
