"""Turn a client's request into a JobSpec: pick the runtime, apply its default limits, cap by the tier."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from chalicelib.config import Settings, TierPolicy
from chalicelib.domain.errors import ValidationFailed
from chalicelib.domain.jobs import JobSpec
from chalicelib.domain.requests import SubmitRequest
from chalicelib.sandbox import tools
from chalicelib.sandbox.models import SandboxLimits, SandboxOffer, SourceFile, TestCase
from chalicelib.sandbox.selection import pick_sandbox
from chalicelib.services import catalog


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as `{"field": "limits.wall_time_s", "message": ...}` for a 422 body."""
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_submit(body: Any) -> SubmitRequest:
    """Validate the shape of a submit body (no tier needed yet)."""
    if not isinstance(body, dict):
        raise ValidationFailed("the body must be a JSON object", [{"field": "(body)", "message": "not an object"}])
    try:
        return SubmitRequest.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed("invalid job", field_errors(exc)) from exc


def _invalid(field: str, message: str, **extra: Any) -> ValidationFailed:
    return ValidationFailed(message, [{"field": field, "message": message, **extra}])


def _check_sizes(req: SubmitRequest, settings: Settings) -> None:
    """Each input and their totals within what every sandbox can take in one request (README "Limits")."""
    source_bytes = len((req.source or "").encode()) + sum(len(f.content.encode()) for f in req.files or [])
    if source_bytes > settings.max_source_bytes:
        field = "source" if req.source is not None else "files"
        raise _invalid(field, f"source is {source_bytes} bytes; the limit is {settings.max_source_bytes}")
    inputs = [("stdin", req.stdin)]
    for i, test in enumerate(req.tests):
        inputs += [(f"tests.{i}.stdin", test.stdin), (f"tests.{i}.expected_stdout", test.expected_stdout)]
    total = 0
    for field, text in inputs:
        size = len(text.encode())
        if size > settings.max_stdin_bytes:
            raise _invalid(field, f"{field} is {size} bytes; the limit is {settings.max_stdin_bytes}")
        total += size
    if total > settings.max_input_bytes:
        field = "tests" if req.tests else "stdin"
        limit = settings.max_input_bytes
        message = f"stdin and the tests' stdin and expected_stdout total {total} bytes; the limit is {limit}"
        raise _invalid(field, message, limit=limit)
    args_bytes = sum(len(a.encode()) for a in req.args)
    if args_bytes > settings.max_args_bytes:
        raise _invalid("args", f"args total {args_bytes} bytes; the limit is {settings.max_args_bytes}")


def _check_encoded_size(spec: JobSpec, settings: Settings) -> None:
    """The job as a sandbox receives it (JSON) must fit one Lambda request: control characters, which JSON
    writes as six bytes each, can make a job within every byte limit too large to send."""
    size = len(spec.model_dump_json().encode())
    if size > settings.max_request_bytes:
        sizes = {"stdin": len(spec.stdin), "tests": sum(len(t.stdin) + len(t.expected_stdout) for t in spec.tests)}
        field = max(sizes, key=lambda name: sizes[name])
        limit = settings.max_request_bytes
        message = f"the job takes {size} bytes JSON-encoded (a control character takes 6); the limit is {limit}"
        raise _invalid(field, message, limit=limit)


def _limits(req: SubmitRequest, defaults: SandboxLimits, tier: TierPolicy) -> SandboxLimits:
    asked = req.limits
    if asked.wall_time_s is not None and asked.wall_time_s > tier.max_wall_time_s:
        raise _invalid(
            "limits.wall_time_s",
            f"{asked.wall_time_s} s is above the '{tier.name}' tier's {tier.max_wall_time_s} s",
            max=tier.max_wall_time_s,
        )
    if asked.cpu_time_s is not None and asked.cpu_time_s > tier.max_wall_time_s:
        raise _invalid(
            "limits.cpu_time_s", f"above the '{tier.name}' tier's {tier.max_wall_time_s} s", max=tier.max_wall_time_s
        )
    if asked.memory_mb is not None and asked.memory_mb > tier.max_memory_mb:
        raise _invalid(
            "limits.memory_mb",
            f"{asked.memory_mb} MB is above the '{tier.name}' tier's {tier.max_memory_mb} MB",
            max=tier.max_memory_mb,
        )
    wall = asked.wall_time_s or min(defaults.wall_time_s, tier.max_wall_time_s)
    return SandboxLimits(
        wall_time_s=wall,
        cpu_time_s=asked.cpu_time_s or min(defaults.cpu_time_s, wall),
        memory_mb=asked.memory_mb or min(defaults.memory_mb, tier.max_memory_mb),
        output_kb=asked.output_kb or defaults.output_kb,
        processes=asked.processes or defaults.processes,
    )


def _check_sandbox(req: SubmitRequest, limits: SandboxLimits, offers: dict[str, SandboxOffer]) -> None:
    """Refuse now a sandbox this stage cannot give, rather than failing the job after it was queued (one that
    is not configured or lacks the runtime; for the Lambda sandbox, a job whose every test case's run does not
    fit one invocation)."""
    runtime = catalog.canonical(req.runtime) if req.runtime else None
    try:
        pick_sandbox(req.sandbox, limits, offers, runtime, req.tool, len(req.tests))
    except ValueError as exc:
        raise _invalid("sandbox", str(exc)) from exc


def _check_tool_args(tool: str, args: list[str]) -> None:
    """A tool's args must fit its grammar (nothing that runs a program or names a file): 422 naming `args.N`."""
    try:
        tools.canonical_args(tool, args)
    except tools.ArgumentRejected as exc:
        raise _invalid(f"args.{exc.index}", exc.message) from exc


def build_spec(req: SubmitRequest, tier: TierPolicy, settings: Settings, offers: dict[str, SandboxOffer]) -> JobSpec:
    """The runnable spec, or ValidationFailed naming the field (unknown runtime, one no sandbox of this stage
    offers, sizes, caps, a sandbox that is not configured or lacks the runtime). `offers`: catalog.offers."""
    _check_sizes(req, settings)
    if req.runtime is not None:
        entry = catalog.runtime(req.runtime)
        field, what = "runtime", req.runtime
    else:
        entry = catalog.tool(req.tool or "")
        field, what = "tool", req.tool or ""
    if entry is None:
        # Named back only when it looks like a name: a client's misplaced key or a long string is not echoed.
        named = f" '{what}'" if re.fullmatch(r"[A-Za-z0-9._+-]{1,24}", what) else ""
        raise _invalid(field, f"unknown {field}{named}; see GET /v1/runtimes")
    if not catalog.offered(offers, entry.name if req.runtime else None, req.tool):
        raise _invalid(field, f"{field} '{what}' is not available on this deployment; see GET /v1/runtimes")
    if req.tool is not None:
        _check_tool_args(req.tool, req.args)
    if req.source is not None:
        files = [SourceFile(path=entry.entry_file, content=req.source)]
    else:
        files = [SourceFile(path=f.path, content=f.content) for f in req.files or []]
    limits = _limits(req, entry.default_limits, tier)
    _check_sandbox(req, limits, offers)
    spec = JobSpec(
        runtime=catalog.canonical(req.runtime) if req.runtime else None,
        tool=req.tool,
        files=files,
        args=req.args,
        stdin=req.stdin,
        tests=[TestCase(stdin=t.stdin, expected_stdout=t.expected_stdout) for t in req.tests],
        limits=limits,
        sandbox=req.sandbox,
        callback_url=req.callback_url,
        device=req.device,
        output_encoding=req.output_encoding,
    )
    _check_encoded_size(spec, settings)
    return spec
