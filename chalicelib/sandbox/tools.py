"""The registered tools: fixed executables whose arguments must fit a declared grammar.

Adding a tool is one `register(Tool(...))`: its name, absolute executable candidates, version probe,
description, default limits and argument `Grammar` (required: a tool without one fails at import). The API
validates a job's args against the grammar at submit (422 naming `args.N`), and `runtimes.resolve` parses
them again in every sandbox and runs only the canonical form.

Deliberately never allowed: an option that runs a program, reads or writes a file or directory, or an
operand (for these filters an operand is a file name). Resource knobs that the sandbox's limits already
bound are refused (`sort -S`) or bounded (`sort --parallel`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from chalicelib.sandbox.argspec import ArgumentRejected, Grammar, IntRange, Matching, OneOf, Option, SingleChar
from chalicelib.sandbox.models import DEFAULT_LIMITS, SandboxLimits

__all__ = ["TOOLS", "ArgumentInfo", "ArgumentRejected", "Tool", "arguments", "canonical_args", "register"]


@dataclass(frozen=True)
class Tool:
    """One registered tool. `candidates` are absolute paths tried in order (never a PATH lookup)."""

    name: str
    candidates: tuple[str, ...]
    grammar: Grammar
    description: str
    version_argv: tuple[str, ...] = ("--version",)
    # Extra RLIMIT_AS on top of the memory limit, as for runtimes (thread stacks, locale archives).
    address_space_extra_mb: int = 256
    limits: SandboxLimits = field(default_factory=lambda: DEFAULT_LIMITS, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.grammar, Grammar):
            raise TypeError(f"tool {self.name!r} needs an argument grammar (chalicelib.sandbox.argspec.Grammar)")
        if not self.candidates or not all(os.path.isabs(path) for path in self.candidates):
            raise ValueError(f"tool {self.name!r}: executables must be absolute paths, got {self.candidates}")


TOOLS: dict[str, Tool] = {}


def register(tool: Tool) -> Tool:
    """Add `tool` to the registry; a second tool of the same name is a programming error."""
    if tool.name in TOOLS:
        raise ValueError(f"tool {tool.name!r} is already registered")
    TOOLS[tool.name] = tool
    return tool


def canonical_args(name: str, args: Sequence[str]) -> list[str]:
    """The arguments tool `name` really runs with, or ArgumentRejected naming the first bad one.
    Raises KeyError for a tool that is not registered."""
    tool = TOOLS[name]
    return tool.grammar.canonical(tool.name, args)


class ArgumentInfo(BaseModel):
    """One allowed option as `GET /v1/runtimes` shows it."""

    spellings: list[str]
    value: str | None
    help: str


def arguments(tool: Tool) -> list[ArgumentInfo]:
    """The options `tool` allows, for users (operands are never allowed by the tools registered here)."""
    return [
        ArgumentInfo(spellings=o.spellings(), value=o.value.describe() if o.value else None, help=o.help)
        for o in tool.grammar.options
    ]


# F[.C][OPTS][,F[.C][OPTS]]: field numbers from 1, a start character from 1, an end character from 0.
_KEY_OPTS = "[bdfghiMnRrV]*"
KEYDEF = Matching(
    "KEYDEF: F[.C][OPTS][,F[.C][OPTS]] (e.g. 2,2n)",
    rf"[1-9][0-9]{{0,5}}(\.[1-9][0-9]{{0,5}})?{_KEY_OPTS}(,[1-9][0-9]{{0,5}}(\.[0-9]{{1,6}})?{_KEY_OPTS})?",
)
_WRITES = "writes a file"
_TEMP_DIR = "names a directory for temporary files"
_RUNS = "runs a program"
_READS_NAMED = "reads the files named in a file"
_MEMORY = "a resource knob: the sandbox's memory limit already bounds sort"

register(
    Tool(
        name="sort",
        candidates=("/usr/bin/sort",),
        description="GNU sort: sorts stdin lines",
        grammar=Grammar(
            options=(
                Option("b", "ignore-leading-blanks", "ignore leading blanks"),
                Option("d", "dictionary-order", "consider only blanks and alphanumeric characters"),
                Option("f", "ignore-case", "fold lower case to upper case characters"),
                Option("g", "general-numeric-sort", "compare according to general numerical value"),
                Option("h", "human-numeric-sort", "compare human readable numbers (e.g. 2K 1G)"),
                Option("i", "ignore-nonprinting", "consider only printable characters"),
                Option("M", "month-sort", "compare (unknown) < 'JAN' < ... < 'DEC'"),
                Option("n", "numeric-sort", "compare according to string numerical value"),
                Option("R", "random-sort", "shuffle, but group identical keys (random bytes from the kernel)"),
                Option("r", "reverse", "reverse the result of comparisons"),
                Option("V", "version-sort", "natural sort of (version) numbers within text"),
                Option(
                    None,
                    "sort",
                    "sort by WORD: like -g, -h, -M, -n, -R, -V",
                    OneOf(("general-numeric", "human-numeric", "month", "numeric", "random", "version")),
                ),
                Option("k", "key", "sort via a key", KEYDEF),
                Option(
                    "t", "field-separator", "field separator (default: a non-blank to blank transition)", SingleChar()
                ),
                Option("s", "stable", "stabilize sort by disabling last-resort comparison"),
                Option("u", "unique", "output only the first of an equal run (with -c: check strict order)"),
                Option("z", "zero-terminated", "line delimiter is NUL, not newline"),
                Option("c", "check", "check for sorted input; do not sort"),
                Option("C", None, "like -c, but do not report the first bad line"),
                Option(None, "parallel", "number of sorts run concurrently (threads)", IntRange(1, 8)),
                Option(None, "debug", "annotate the part of the line used to sort"),
            ),
            refused=(
                ("-o", _WRITES),
                ("--output", _WRITES),
                ("-T", _TEMP_DIR),
                ("--temporary-directory", _TEMP_DIR),
                ("--compress-program", _RUNS),
                ("--files0-from", _READS_NAMED),
                ("--random-source", "reads a file"),
                ("-S", _MEMORY),
                ("--buffer-size", _MEMORY),
                ("--batch-size", "merges through temporary files"),
                ("-m", "merges files"),
                ("--merge", "merges files"),
            ),
        ),
    )
)

register(
    Tool(
        name="wc",
        candidates=("/usr/bin/wc",),
        description="GNU wc: counts lines, words, bytes",
        grammar=Grammar(
            options=(
                Option("c", "bytes", "print the byte count"),
                Option("m", "chars", "print the character count"),
                Option("l", "lines", "print the newline count"),
                Option("w", "words", "print the word count"),
                Option("L", "max-line-length", "print the maximum display width"),
            ),
            refused=(("--files0-from", _READS_NAMED),),
        ),
    )
)

register(
    Tool(
        name="base64",
        candidates=("/usr/bin/base64",),
        description="GNU base64: encode/decode",
        grammar=Grammar(
            options=(
                Option("d", "decode", "decode data"),
                Option("i", "ignore-garbage", "when decoding, ignore non-alphabet characters"),
                Option("w", "wrap", "wrap encoded lines after COLS characters (0: no wrapping)", IntRange(0, 65536)),
            ),
        ),
    )
)
