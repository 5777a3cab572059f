"""The registry of runtimes (languages) a job may ask for, and the resolution of runtimes and tools to argv.

Tools and their argument grammars are declared in `tools.py`.

Executables are resolved once and their versions read once, on first use; availability is what the host
actually has, so `GET /v1/runtimes` never promises a language the sandbox cannot start.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from pydantic import BaseModel

from chalicelib.sandbox import tools
from chalicelib.sandbox.models import DEFAULT_LIMITS, SandboxLimits
from chalicelib.sandbox.tools import ArgumentInfo, ArgumentRejected, Tool


class RuntimeInfo(BaseModel):
    """A language the sandbox can run, as shown to users."""

    name: str
    version: str
    available: bool
    default_limits: SandboxLimits
    entry_file: str


class ToolInfo(BaseModel):
    """A registered tool (fixed executable; user args must fit its grammar and are never shell-interpreted)."""

    name: str
    version: str
    available: bool
    default_limits: SandboxLimits
    description: str
    arguments: list[ArgumentInfo]


@dataclass(frozen=True)
class _Spec:
    name: str
    candidates: tuple[str, ...]  # executables tried in order; the first existing one wins
    argv: tuple[str, ...]  # "{exe}" and "{entry}" are substituted; user args (the program's) are appended
    entry_file: str = ""
    # Extra RLIMIT_AS on top of the memory limit: V8 reserves ~1 GB of address space it never touches.
    address_space_extra_mb: int = 256
    limits: SandboxLimits = field(default_factory=lambda: DEFAULT_LIMITS, compare=False, hash=False)


def _system_python() -> str:
    # Prefer the distribution's interpreter so user code never sees our venv or its packages.
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


_RUNTIMES: dict[str, _Spec] = {
    "python3": _Spec("python3", (_system_python(),), ("{exe}", "-B", "{entry}"), entry_file="main.py"),
    "node": _Spec(
        "node",
        ("/usr/bin/node", "/usr/local/bin/node"),
        # V8 sizes its heap from the host, not our limit: tell it, so it fails cleanly ("heap out of memory").
        ("{exe}", "--max-old-space-size={memory_mb}", "{entry}"),
        entry_file="main.js",
        address_space_extra_mb=2048,
    ),
    "bash": _Spec("bash", ("/usr/bin/bash", "/bin/bash"), ("{exe}", "{entry}"), entry_file="main.sh"),
}


@functools.cache
def _executable(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            # Resolved so the sandbox binds a real file, not a venv symlink outside /usr.
            return os.path.realpath(path)
    return None


@functools.cache
def _version(candidates: tuple[str, ...], probe: tuple[str, ...] = ("--version",)) -> str:
    exe = _executable(candidates)
    if exe is None:
        return "unavailable"
    try:
        done = subprocess.run([exe, *probe], capture_output=True, timeout=10, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else "unknown"


def _runtime_info(spec: _Spec) -> RuntimeInfo:
    return RuntimeInfo(
        name=spec.name,
        version=_version(spec.candidates),
        available=_executable(spec.candidates) is not None,
        default_limits=spec.limits,
        entry_file=spec.entry_file,
    )


def _tool_info(tool: Tool) -> ToolInfo:
    return ToolInfo(
        name=tool.name,
        version=_version(tool.candidates, tool.version_argv),
        available=_executable(tool.candidates) is not None,
        default_limits=tool.limits,
        description=tool.description,
        arguments=tools.arguments(tool),
    )


def list_runtimes() -> list[RuntimeInfo]:
    """Every registered runtime with its version and whether this host can run it."""
    return [_runtime_info(spec) for spec in _RUNTIMES.values()]


def get_runtime(name: str) -> RuntimeInfo | None:
    """The runtime called `name`, or None if it is not registered."""
    spec = _RUNTIMES.get(name)
    return _runtime_info(spec) if spec else None


def list_tools() -> list[ToolInfo]:
    """Every registered tool with its version, availability and allowed arguments."""
    return [_tool_info(tool) for tool in tools.TOOLS.values()]


def get_tool(name: str) -> ToolInfo | None:
    """The tool called `name`, or None if it is not registered."""
    tool = tools.TOOLS.get(name)
    return _tool_info(tool) if tool else None


@dataclass(frozen=True)
class ResolvedCommand:
    """What the runner starts: argv relative to the work dir, plus the runtime's address-space headroom."""

    argv: list[str]
    address_space_extra_mb: int


class UnknownRuntime(ValueError):
    """The request names a runtime or tool that is not registered or not installed here."""


class ToolArgsRejected(UnknownRuntime):
    """A tool's args break its grammar: the API refuses these at submit, so reaching here is a platform bug
    (or an API and a sandbox running different registries). Never run; not retryable."""


def resolve(
    runtime: str | None, tool: str | None, entry: str | None, args: list[str], memory_mb: int
) -> ResolvedCommand:
    """Turn a runtime (with its entry file) or a tool name into argv; user args never go through a shell,
    and a tool runs only the canonical form of args that fit its grammar."""
    if (runtime is None) == (tool is None):
        raise UnknownRuntime("exactly one of runtime or tool must be given")
    if tool is not None:
        return _resolve_tool(tool, args)
    spec = _RUNTIMES.get(runtime or "")
    exe = _executable(spec.candidates) if spec else None
    if spec is None or exe is None:
        raise UnknownRuntime(f"runtime {runtime!r} is not available")
    entry_name = entry or spec.entry_file
    values = {"{exe}": exe, "{entry}": entry_name, "{memory_mb}": str(memory_mb)}
    argv = []
    for part in spec.argv:
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
        argv.append(part)
    return ResolvedCommand(argv=argv + list(args), address_space_extra_mb=spec.address_space_extra_mb)


def _resolve_tool(name: str, args: list[str]) -> ResolvedCommand:
    tool = tools.TOOLS.get(name)
    exe = _executable(tool.candidates) if tool else None
    if tool is None or exe is None:
        raise UnknownRuntime(f"tool {name!r} is not available")
    try:
        tail = tool.grammar.canonical(tool.name, args)
    except ArgumentRejected as exc:
        raise ToolArgsRejected(str(exc)) from exc
    return ResolvedCommand(argv=[exe, *tail], address_space_extra_mb=tool.address_space_extra_mb)
