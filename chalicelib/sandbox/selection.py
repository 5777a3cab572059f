"""Which sandbox runs a job: local in dev, Lambda when the whole job fits one invocation, Fargate beyond; and
which of the Lambda sandbox functions (one per memory class) holds it.

A sandbox is only ever picked for a job when it has the job's runtime (or tool), as its offer says, and
`auto` skips a sandbox that refuses to run user code (a guarantee cannot hold there) or could not be asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from chalicelib.sandbox.models import SandboxLimits, SandboxOffer

SandboxKind = Literal["local", "lambda", "fargate"]
KINDS: tuple[SandboxKind, ...] = ("local", "lambda", "fargate")  # auto's order of preference

LAMBDA_TIMEOUT_S = 900  # the sandbox functions' timeout (.chalice/config.json), also the workers' that wait on them
# Cold start, /tmp wipe, supervisor start and result transfer come out of the 15 minutes, once per invocation;
# each run of the program (one per test case) adds a process start and its output's collection.
LAMBDA_OVERHEAD_S = 60
LAMBDA_PER_RUN_OVERHEAD_S = 1

# The Lambda sandbox functions, by the memory each is configured with (app.py declares `sandbox_<mb>` for each,
# .chalice/config.json sizes them). Lambda gives a function CPU in proportion to its memory and one full vCPU
# at 1,769 MB: a job's time limits assume a full core, and below it a CPU-bound run takes longer at the same
# GB-seconds while its worker and the waiting API pay for the extra time. So the smallest class is one vCPU, and
# the larger one holds the biggest tier's memory limit.
SANDBOX_MEMORY_CLASSES = (1769, 3136)
# What the sandbox function's own process needs beside the job: Python, the runner and the supervisor.
SANDBOX_HEADROOM_MB = 128


def memory_class(memory_mb: int) -> int | None:
    """The smallest sandbox function that holds a job limited to `memory_mb` (None if none does)."""
    for size in SANDBOX_MEMORY_CLASSES:
        if memory_mb + SANDBOX_HEADROOM_MB <= size:
            return size
    return None


def sandbox_function_name(memory_mb: int) -> str:
    """app.py's name of the sandbox function for a job limited to `memory_mb` (ValueError if none holds it)."""
    size = memory_class(memory_mb)
    if size is None:
        raise ValueError(f"no Lambda sandbox holds {memory_mb} MB")
    return f"sandbox_{size}"


def lambda_seconds(limits: SandboxLimits, runs: int) -> float:
    """How long a job with `limits` and `runs` runs of its program (one per test case, at least one) may take
    in one Lambda invocation, at most."""
    runs = max(1, runs)
    return limits.wall_time_s * runs + LAMBDA_PER_RUN_OVERHEAD_S * runs + LAMBDA_OVERHEAD_S


def fits_lambda(limits: SandboxLimits, runs: int = 1) -> bool:
    """True when the whole job (every test case's run) can finish inside one sandbox invocation."""
    return lambda_seconds(limits, runs) <= LAMBDA_TIMEOUT_S and memory_class(limits.memory_mb) is not None


def why_not_lambda(limits: SandboxLimits, runs: int) -> str:
    """Why a job cannot run in a Lambda sandbox (for a 422)."""
    if memory_class(limits.memory_mb) is None:
        return f"{limits.memory_mb} MB is more than a Lambda sandbox holds ({max(SANDBOX_MEMORY_CLASSES)} MB)"
    return (
        f"{max(1, runs)} run(s) of up to {limits.wall_time_s:g} s each may take {lambda_seconds(limits, runs):g} s, "
        f"more than one Lambda invocation's {LAMBDA_TIMEOUT_S} s; use 'auto' or 'fargate'"
    )


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
    runs: int = 1,
) -> SandboxKind:
    """Resolve `requested` ("auto", "local", "lambda", "fargate") to a sandbox of `offers` (the configured ones)
    for a job of `runs` runs of its program (its test cases, at least one).

    `auto` takes the first of local, Lambda (if the whole job fits) and Fargate that is usable and has the
    runtime. An explicit choice only needs to be configured, to fit, and to have the runtime (when its offer is
    known): if it refuses to run user code the job ends in an error that says why, rather than running elsewhere.
    Raises ValueError saying why no sandbox fits.
    """
    if requested == "auto":
        for kind in KINDS:
            offer = offers.get(kind)
            if offer is None or not may_run(offer, runtime, tool):
                continue
            if kind == "lambda" and not fits_lambda(limits, runs):
                continue
            return kind
        raise ValueError(f"no sandbox of this stage can run {_what(runtime, tool)} with these limits now")
    if requested not in KINDS:
        raise ValueError(f"unknown sandbox {requested!r}")
    offer = offers.get(requested)
    if offer is None:
        raise ValueError(f"this stage has no '{requested}' sandbox")
    if requested == "lambda" and not fits_lambda(limits, runs):
        raise ValueError(f"the job cannot run in a Lambda sandbox: {why_not_lambda(limits, runs)}")
    if offer.reachable and not offer.offers(runtime, tool):
        raise ValueError(f"the '{requested}' sandbox has no {_what(runtime, tool)}")
    return requested  # type: ignore[return-value]
