"""Which sandbox runs a job: local in dev, Lambda when the job fits its limits, Fargate beyond."""

from __future__ import annotations

from typing import Literal

from chalicelib.sandbox.models import SandboxLimits

SandboxKind = Literal["local", "lambda", "fargate"]

LAMBDA_TIMEOUT_S = 900
# Cold start, /tmp wipe, supervisor start and result transfer all come out of Lambda's 15 minutes.
LAMBDA_OVERHEAD_S = 60
LAMBDA_MAX_MEMORY_MB = 10_240


def fits_lambda(limits: SandboxLimits) -> bool:
    """True when a run with `limits` can finish inside one Lambda invocation."""
    return limits.wall_time_s <= LAMBDA_TIMEOUT_S - LAMBDA_OVERHEAD_S and limits.memory_mb <= LAMBDA_MAX_MEMORY_MB


def pick_sandbox(requested: str, limits: SandboxLimits, local_enabled: bool) -> SandboxKind:
    """Resolve `requested` ("auto", "local", "lambda", "fargate") to a concrete sandbox.

    Raises ValueError for an unknown name, "local" where it is disabled, or "lambda" for a job Lambda
    cannot hold.
    """
    if requested == "auto":
        if local_enabled:
            return "local"
        return "lambda" if fits_lambda(limits) else "fargate"
    if requested == "local":
        if not local_enabled:
            raise ValueError("the local sandbox is disabled on this stage")
        return "local"
    if requested == "lambda":
        if not fits_lambda(limits):
            raise ValueError("the job's limits exceed what a Lambda sandbox allows")
        return "lambda"
    if requested == "fargate":
        return "fargate"
    raise ValueError(f"unknown sandbox {requested!r}")
