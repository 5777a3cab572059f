"""What a sandbox offers where it runs: the runtimes and tools it has (with versions) and its layers."""

from __future__ import annotations

from chalicelib.sandbox import runtimes
from chalicelib.sandbox.models import SandboxOffer


def host_offer(sandbox: str, layers: dict[str, bool | str], refusal: str | None, source: str) -> SandboxOffer:
    """The offer of a sandbox running on this host (or in this function, or in this task)."""
    return SandboxOffer(
        sandbox=sandbox,
        refusal=refusal,
        runtimes={info.name: info.version for info in runtimes.list_runtimes() if info.available},
        tools={info.name: info.version for info in runtimes.list_tools() if info.available},
        layers=layers,
        source=source,
    )
