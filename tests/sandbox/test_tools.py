"""Registered tools in the sandbox: allowed argument forms really run and give the expected output; args
outside the grammar never run, in any isolation (every sandbox resolves through `runtimes.resolve`)."""

from __future__ import annotations

import os

import pytest
from conftest import SMALL

from chalicelib.sandbox import runtimes
from chalicelib.sandbox.local import Isolation
from chalicelib.sandbox.models import ExecutionRequest
from chalicelib.sandbox.runner import execute
from chalicelib.sandbox.runtimes import ToolArgsRejected, UnknownRuntime

pytestmark = pytest.mark.xdist_group("sandbox")

RUNS = [
    ("sort", ["-n", "-r"], "2\n10\n1\n", "10\n2\n1\n"),
    ("sort", ["-nr"], "2\n10\n1\n", "10\n2\n1\n"),
    ("sort", ["-r"], "a\nc\nb\n", "c\nb\na\n"),
    ("sort", ["-t,", "-k2,2n"], "a,10\nb,9\nc,100\n", "b,9\na,10\nc,100\n"),
    ("sort", ["--field-separator=;", "--key", "2,2"], "x;b\ny;a\n", "y;a\nx;b\n"),
    ("sort", ["-t", "\t", "-k2n"], "a\t3\nb\t1\n", "b\t1\na\t3\n"),
    ("sort", ["-u", "--parallel=2"], "b\na\nb\n", "a\nb\n"),
    ("wc", ["-l"], "1\n2\n3\n", "3\n"),
    ("wc", ["-lw"], "a b\nc\n", "2 3\n"),
    ("base64", ["-d"], "aGVsbG8=\n", "hello"),
    ("base64", ["-w", "0"], "hello world, hello world, hello world, hello world, hello world!", None),
    ("base64", ["-w4"], "hello", "aGVs\nbG8=\n"),
]


@pytest.mark.parametrize(("tool", "args", "stdin", "expected"), RUNS)
def test_allowed_forms_run_and_give_the_expected_output(
    full_isolation: Isolation, tool: str, args: list[str], stdin: str, expected: str | None
) -> None:
    request = ExecutionRequest(job_id="tool", tool=tool, args=args, stdin=stdin, limits=SMALL)
    result = execute(request, isolation=full_isolation)
    assert result.reason is None, result
    if expected is None:  # -w 0: one line, however long
        assert "\n" not in result.stdout.rstrip("\n") and len(result.stdout.strip()) > 76
    else:
        assert result.stdout == expected


def test_random_sort_runs_with_the_kernels_random_source(full_isolation: Isolation) -> None:
    lines = [str(n) for n in range(50)]
    request = ExecutionRequest(job_id="tool", tool="sort", args=["-R"], stdin="\n".join(lines) + "\n", limits=SMALL)
    result = execute(request, isolation=full_isolation)
    assert result.reason is None and sorted(result.stdout.split()) == sorted(lines), result


def test_separator_values_are_never_shell_interpreted(full_isolation: Isolation) -> None:
    request = ExecutionRequest(job_id="tool", tool="sort", args=["-t", ";", "-k2"], stdin="a;2\nb;1\n", limits=SMALL)
    assert execute(request, isolation=full_isolation).stdout == "b;1\na;2\n"


EXPLOITS = [
    ("sort", ["--compress-program=/bin/sh", "-S", "1"]),
    ("sort", ["--compress=/bin/sh", "-S1"]),
    ("sort", ["-o", "out.txt"]),
    ("sort", ["-nro", "out.txt"]),
    ("sort", ["--", "/etc/passwd"]),
    ("wc", ["--files0-from=/etc/passwd"]),
    ("base64", ["/etc/passwd"]),
    ("base64", ["; echo pwned"]),
]


@pytest.mark.parametrize(("tool", "args"), EXPLOITS)
def test_args_outside_the_grammar_never_run(isolation: Isolation, tool: str, args: list[str]) -> None:
    request = ExecutionRequest(job_id="tool", tool=tool, args=args, stdin="touch pwned\n", limits=SMALL)
    with pytest.raises(ToolArgsRejected, match=r"^args\.\d+: ") as caught:
        execute(request, isolation=isolation)
    assert isinstance(caught.value, UnknownRuntime)  # refused as a bad request: never retried


def test_resolve_runs_the_canonical_form() -> None:
    command = runtimes.resolve(None, "sort", None, ["-nrt,", "-k2,2n", "--parallel=02"], 256)
    assert os.path.basename(command.argv[0]) == "sort" and os.path.isabs(command.argv[0])
    assert command.argv[1:] == [
        "--numeric-sort", "--reverse", "--field-separator", ",", "--key", "2,2n", "--parallel", "2",
    ]  # fmt: skip


def test_runtime_args_are_the_programs_own() -> None:
    """A runtime's args go to the user's program, after its entry file: no grammar applies to them."""
    command = runtimes.resolve("bash", None, "main.sh", ["--compress-program=/bin/sh", "-o"], 256)
    assert command.argv[-3:] == ["main.sh", "--compress-program=/bin/sh", "-o"]


def test_tools_listing_shows_each_tools_allowed_arguments() -> None:
    listed = {tool.name: tool for tool in runtimes.list_tools()}
    assert listed["sort"].available and listed["sort"].version.startswith("sort")
    spellings = {s for argument in listed["sort"].arguments for s in argument.spellings}
    assert {"-k", "--key", "-t", "-n", "--numeric-sort"} <= spellings
    assert not spellings & {"-o", "--output", "--compress-program", "-T", "-S", "--files0-from"}
    key = next(a for a in listed["sort"].arguments if "--key" in a.spellings)
    assert key.value is not None and "KEYDEF" in key.value
