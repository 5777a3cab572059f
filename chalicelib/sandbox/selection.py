"""Which sandbox runs a job: local in dev, Lambda when the job fits its limits, Fargate beyond.

A sandbox is only ever picked for a job when it has the job's runtime (or tool), as its offer says, and
`auto` skips a sandbox that refuses to run user code (a guarantee cannot hold there) or could not be asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from chalicelib.sandbox.models import SandboxLimits, SandboxOffer

SandboxKind = Literal["local", "lambda", "fargate"]
KINDS: tuple[SandboxKind, ...] = ("local", "lambda", "fargate")  # auto's order of preference

LAMBDA_TIMEOUT_S = 900
# Cold start, /tmp wipe, supervisor start and result transfer all come out of Lambda's 15 minutes.
LAMBDA_OVERHEAD_S = 60
LAMBDA_MAX_MEMORY_MB = 10_240


def fits_lambda(limits: SandboxLimits) -> bool:
    """True when a run with `limits` can finish inside one Lambda invocation."""
    return limits.wall_time_s <= LAMBDA_TIMEOUT_S - LAMBDA_OVERHEAD_S and limits.memory_mb <= LAMBDA_MAX_MEMORY_MB


def may_run(offer: SandboxOffer, runtime: str | None, tool: str | None) -> bool:
    """Whether `auto` may send the job there: it has the runtime and does not refuse, or it could not be asked
    (a throttled or cold function is no refusal: the run itself then fails and is retried as any fault)."""
    return not offer.reachable or (offer.refusal is None and offer.offers(runtime, tool))


def _what(runtime: str | None, tool: str | None) -> str:
    return f"runtime '{runtime}'" if runtime is not None else f"tool '{tool}'"


def pick_sandbox(
    requested: str,
    limits: SandboxLimits,
    offers: Mapping[str, SandboxOffer],
    runtime: str | None = None,
    tool: str | None = None,
) -> SandboxKind:
    """Resolve `requested` ("auto", "local", "lambda", "fargate") to a sandbox of `offers` (the configured ones).

    `auto` takes the first of local, Lambda (if the job fits) and Fargate that is usable and has the runtime.
    An explicit choice only needs to be configured, to fit, and to have the runtime (when its offer is known):
    if it refuses to run user code the job ends in an error that says why, rather than running elsewhere.
    Raises ValueError saying why no sandbox fits.
    """
    if requested == "auto":
        for kind in KINDS:
            offer = offers.get(kind)
            if offer is None or not may_run(offer, runtime, tool):
                continue
            if kind == "lambda" and not fits_lambda(limits):
                continue
            return kind
        raise ValueError(f"no sandbox of this stage can run {_what(runtime, tool)} with these limits now")
    if requested not in KINDS:
        raise ValueError(f"unknown sandbox {requested!r}")
    offer = offers.get(requested)
    if offer is None:
        raise ValueError(f"this stage has no '{requested}' sandbox")
    if requested == "lambda" and not fits_lambda(limits):
        raise ValueError("the job's limits exceed what a Lambda sandbox allows")
    if offer.reachable and not offer.offers(runtime, tool):
        raise ValueError(f"the '{requested}' sandbox has no {_what(runtime, tool)}")
    return requested  # type: ignore[return-value]
