"""`coderunner`: run code on code-runner from a shell (`run`, `jobs`, `usage`); `keys` is the operator's.

It needs only an API key, never AWS credentials. `keys ...` is handed to the operator CLI (devtools.cli) of
the code-runner checkout when it is importable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table

from coderunner_client.client import Client
from coderunner_client.display import SilentStatus, StatusLine, describe, status_line
from coderunner_client.errors import CodeRunnerError, WaitTimeout
from coderunner_client.exitcodes import (
    EXIT_BUSY,
    EXIT_CODES,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    error_exit_code,
    exit_code,
)
from coderunner_client.models import Job

HELP_EPILOG = (
    EXIT_CODES
    + """
key and URL: --key/--url, else CODERUNNER_API_KEY/CODERUNNER_URL, else the local stack's .dev/keys.json
and .dev/stack.json (from `make dev`, found from the current directory up).
"""
)

RUNTIMES_BY_SUFFIX = {".py": "python3", ".js": "node", ".mjs": "node", ".cjs": "node", ".sh": "bash", ".bash": "bash"}
_POLL_S = 1.0  # how often the status line is refreshed from the server while the job waits or runs
TIER_ORDER = ("free", "pro", "enterprise")
OPERATOR_COMMANDS = ("keys",)
_VALUE_OPTIONS = ("--key", "--url", "--stage")  # global options that take a value (the operator's too)


class UsageError(Exception):
    """Bad usage the parser cannot see (a missing file, no key): exit 2."""


# --- arguments -------------------------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--key, --url and --json, accepted before or after the command (a subcommand's copy never resets them)."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--key", default=default, help="API key (default: CODERUNNER_API_KEY, else .dev/keys.json)")
    parser.add_argument("--url", default=default, help="API URL (default: CODERUNNER_URL, else .dev/stack.json)")
    parser.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS, help="JSON out")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="coderunner",
        description="Run code on code-runner, and see your jobs and usage.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _global_options(top, top=True)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,jobs,usage,keys}")
    run = commands.add_parser(
        "run",
        help="run a program and exit with its exit code",
        description="Submit a program, show its progress on one line, print its output, exit with its code.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("file", type=Path, help="the program; its extension names the runtime (.py, .js, .sh)")
    run.add_argument("--stdin", type=Path, metavar="FILE", help="standard input for the program (- : this one's)")
    run.add_argument("--tests", type=Path, metavar="FILE", help='JSON: [{"stdin": "...", "expected_stdout": "..."}]')
    run.add_argument("--runtime", help="python3, node, bash... (default: from the file's extension)")
    run.add_argument("--wait-timeout", type=float, metavar="S", help="stop waiting after S seconds (exit 75)")
    jobs = commands.add_parser("jobs", help="your jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    commands.add_parser("usage", help="your limits, what is used and when each window resets")
    commands.add_parser("keys", help="operator: API keys (needs the code-runner checkout)", add_help=False)
    for sub in (run, jobs, commands.choices["usage"]):
        _global_options(sub, top=False)
    return top


def command_of(argv: Sequence[str]) -> str | None:
    """The first word that is neither an option nor an option's value."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--":
            return None
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


# --- where the API is --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    key: str
    note: str | None = None  # said on stderr when the key came from the local stack


def _local_file(env: Mapping[str, str], variable: str, name: str, cwd: Path) -> Path | None:
    """The local stack's file: `$variable`, else `.dev/<name>` in the current directory or above it."""
    if env.get(variable):
        return Path(env[variable])
    for folder in (cwd, *cwd.parents):
        if (folder / ".dev" / name).is_file():
            return folder / ".dev" / name
    return None


def target(args: argparse.Namespace, env: Mapping[str, str], cwd: Path) -> Target:
    """The API's URL and key: flags, else the environment, else the running `make dev` stack's files."""
    key, url, note = args.key or env.get("CODERUNNER_API_KEY"), args.url or env.get("CODERUNNER_URL"), None
    if not key:
        path = _local_file(env, "CODERUNNER_KEYS_FILE", "keys.json", cwd)
        keys = _read_json(path) if path else {}
        tier = next((t for t in (*TIER_ORDER, *keys) if keys.get(t)), None)
        if tier is None:
            raise UsageError("no API key: pass --key, set CODERUNNER_API_KEY, or start the local stack (`make dev`)")
        key, note = str(keys[tier]), f"using the local stack's {tier} key ({path})"
    if not url:
        path = _local_file(env, "CODERUNNER_STACK_FILE", "stack.json", cwd)
        url = _read_json(path).get("api") if path else None
        if not url:
            raise UsageError("no API URL: pass --url, set CODERUNNER_URL, or start the local stack (`make dev`)")
    return Target(str(url), str(key), note)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


# --- commands ----------------------------------------------------------------------------------------------


@dataclass
class Io:
    stdout: TextIO
    stderr: TextIO
    stdin: TextIO


def _read(path: Path, io: Io) -> str:
    if str(path) == "-":
        return io.stdin.read()
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _job_body(args: argparse.Namespace, io: Io) -> dict[str, Any]:
    runtime = args.runtime or RUNTIMES_BY_SUFFIX.get(args.file.suffix.lower())
    if runtime is None:
        raise UsageError(f"cannot tell the runtime of {args.file}: pass --runtime (python3, node, bash)")
    body: dict[str, Any] = {"runtime": runtime, "source": _read(args.file, io)}
    if args.stdin is not None:
        body["stdin"] = _read(args.stdin, io)
    if args.tests is not None:
        try:
            body["tests"] = json.loads(_read(args.tests, io))
        except ValueError as exc:
            raise UsageError(f"{args.tests} is not JSON: {exc}") from exc
    return body


def run(client: Client, args: argparse.Namespace, io: Io) -> int:
    submitted = client.submit(**_job_body(args, io))
    line = SilentStatus() if args.json else status_line(io.stderr)
    try:
        job = _follow(client, submitted, line, args.wait_timeout)
    except WaitTimeout:
        io.stderr.write(f"still not finished after {args.wait_timeout:g} s: job {submitted.id} goes on\n")
        return EXIT_BUSY
    except KeyboardInterrupt:
        line.close()
        with contextlib.suppress(CodeRunnerError):  # it may have finished meanwhile
            client.cancel(submitted.id)
        io.stderr.write(f"\ninterrupted: job {submitted.id} cancelled\n")
        return EXIT_INTERRUPTED
    finally:
        line.close()
    _print_result(job, args.json, io)
    return exit_code(job)


def _follow(client: Client, job: Job, line: StatusLine, wait_timeout: float | None) -> Job:
    """Poll the job until it is terminal, showing where it is; `WaitTimeout` after `wait_timeout` seconds."""
    deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
    while not job.terminal:
        line.show(describe(job))
        left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
        if left <= 0:
            raise WaitTimeout(job.id, wait_timeout or 0.0)
        job = client.get(job.id, wait=left)
    line.finish(describe(job))
    return job


def _print_result(job: Job, as_json: bool, io: Io) -> None:
    if as_json:
        io.stdout.write(json.dumps(job.raw, indent=2) + "\n")
        return
    result = job.result
    if result is None:
        return
    io.stdout.write(result.stdout)
    io.stdout.flush()
    io.stderr.write(result.stderr)
    for name, cut in (("stdout", result.stdout_truncated), ("stderr", result.stderr_truncated)):
        if cut:
            io.stderr.write(f"\n[{name} truncated at the output limit]\n")
    if result.tests:
        for i, case in enumerate(result.tests.cases, 1):
            io.stderr.write(f"test {i}: {case.verdict}\n")


def jobs(client: Client, args: argparse.Namespace, io: Io) -> int:
    page = client.jobs(limit=args.limit)
    if args.json:
        io.stdout.write(json.dumps([j.raw for j in page.jobs], indent=2) + "\n")
        return 0
    header = ("id", "status", "runtime", "created", "wall ms", "exit")
    rows = [
        (
            j.id,
            j.status,
            j.runtime or j.tool or "",
            str(j.raw.get("created_at") or ""),
            str(j.result.wall_ms) if j.result else "",
            str(j.result.exit_code) if j.result and j.result.exit_code is not None else "",
        )
        for j in page.jobs
    ]
    _table(header, rows, io.stdout)
    return 0


def usage(client: Client, args: argparse.Namespace, io: Io) -> int:
    info = client.usage()
    if args.json:
        io.stdout.write(json.dumps(info.raw, indent=2) + "\n")
        return 0
    header = ("limit", "used", "of", "remaining", "resets at")
    rows = [
        (name, str(w.used), str(w.limit), str(w.remaining), iso(w.reset))
        for name, w in (("per minute", info.per_minute), ("per day", info.per_day))
    ]
    if info.concurrency:
        c = info.concurrency
        rows.append(("running at once", str(c.running), str(c.limit), str(max(0, c.limit - c.running)), ""))
    io.stdout.write(f"{info.key_id} ({info.owner}, {info.tier} tier)\n")
    _table(header, rows, io.stdout)
    return 0


def iso(unix: float | None) -> str:
    """A Unix time as the API writes times: ISO 8601, UTC, with a Z."""
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], stream: TextIO) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, scripts)."""
    console = Console(file=stream)
    if console.is_terminal:
        table = Table(*header)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        stream.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, Io], int]] = {"run": run, "jobs": jobs, "usage": usage}


# --- entry point -------------------------------------------------------------------------------------------


def operator(argv: Sequence[str], io: Io) -> int:
    """`coderunner keys ...`: the operator CLI of the code-runner checkout (it needs AWS credentials)."""
    try:
        from devtools import cli as operator_cli
    except ModuleNotFoundError as exc:
        if exc.name not in ("devtools", "devtools.cli"):
            raise
        io.stderr.write(
            "error: `coderunner keys` is an operator command: it needs the code-runner checkout "
            "(run it from the repository's .venv)\n"
        )
        return EXIT_USAGE
    return operator_cli.main(list(argv), out=io.stdout)


def cli(
    argv: Sequence[str],
    io: Io,
    env: Mapping[str, str],
    cwd: Path,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Run one command; what `main` does, with every outside input passed in (tests use this)."""
    if command_of(argv) in OPERATOR_COMMANDS:
        return operator(argv, io)
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or bad usage (2)
        return int(exc.code or 0)
    try:
        where = target(args, env, cwd)
        if where.note:
            io.stderr.write(where.note + "\n")
        with Client(where.url, where.key, transport=transport) as client:
            return COMMANDS[args.command](client, args, io)
    except UsageError as exc:
        io.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except CodeRunnerError as exc:
        io.stderr.write(f"error: {exc}\n")
        if exc.details:
            io.stderr.write(json.dumps(exc.details) + "\n")
        return error_exit_code(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """The `coderunner` command."""
    args = sys.argv[1:] if argv is None else list(argv)
    return cli(args, Io(sys.stdout, sys.stderr, sys.stdin), os.environ, Path.cwd())


if __name__ == "__main__":
    raise SystemExit(main())
