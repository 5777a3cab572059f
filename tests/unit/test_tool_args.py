"""The registered tools' argument grammars: what is refused (naming the argument), what is accepted and how
it is canonicalised, and (Hypothesis) that whatever is accepted is exactly what GNU getopt_long sees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.sandbox.argspec import ArgumentRejected, Grammar, IntRange, OneOf, Option, SingleChar, ValueType
from chalicelib.sandbox.tools import TOOLS, Tool, canonical_args, register
from devtools.tooldoc import table
from tests.unit import gnu_getopt

# (args, index of the argument that must be named, text the message must contain)
REFUSED: dict[str, list[tuple[list[str], int, str]]] = {
    "sort": [
        (["--compress-program=/bin/sh", "-S", "1"], 0, "'--compress-program' is not an allowed option of 'sort'"),
        (["--compress-program", "/bin/sh"], 0, "runs a program"),
        (["--compress=/bin/sh"], 0, "abbreviation of '--compress-program'"),
        (["--compress-prog", "/bin/sh"], 0, "--compress-prog"),
        (["--c=/bin/sh"], 0, "'--c'"),
        (["-n", "--compress-program=sh"], 1, "--compress-program"),
        (["-S", "1"], 0, "'-S'"),
        (["-S1"], 0, "'-S'"),
        (["--buffer-size=1"], 0, "--buffer-size"),
        (["--buffer=1"], 0, "abbreviation of '--buffer-size'"),
        (["-o", "/tmp/x"], 0, "'-o' is not an allowed option of 'sort' (writes a file)"),
        (["-o/tmp/x"], 0, "'-o'"),
        (["--output=/tmp/x"], 0, "writes a file"),
        (["--output", "/tmp/x"], 0, "--output"),
        (["--out=/tmp/x"], 0, "abbreviation of '--output'"),
        (["-nro", "/tmp/x"], 0, "'-o' is not an allowed option of 'sort' (writes a file)"),
        (["-no/tmp/x"], 0, "(in '-no/tmp/x')"),
        (["-n", "-ro/tmp/x"], 1, "'-o'"),
        (["-nrS1"], 0, "'-S'"),
        (["-T", "/tmp"], 0, "'-T'"),
        (["-T/tmp"], 0, "'-T'"),
        (["--temporary-directory=/tmp"], 0, "temporary files"),
        (["--temp=/tmp"], 0, "abbreviation"),
        (["--files0-from=/etc/passwd"], 0, "reads the files named in a file"),
        (["--files0-from", "-"], 0, "--files0-from"),
        (["--files0=/etc/passwd"], 0, "abbreviation of '--files0-from'"),
        (["--random-source=/etc/shadow"], 0, "reads a file"),
        (["--random-s=/etc/shadow"], 0, "abbreviation of '--random-source'"),
        (["-m"], 0, "merges files"),
        (["--merge"], 0, "merges files"),
        (["--batch-size=2"], 0, "--batch-size"),
        (["--help"], 0, "'--help' is not an allowed option"),
        (["--version"], 0, "'--version' is not an allowed option"),
        (["-y1"], 0, "'-y'"),
        (["--num"], 0, "abbreviations are refused: write --numeric-sort"),
        (["--numeric-sort=1"], 0, "takes no value"),
        (["--check=quiet"], 0, "takes no value"),
        (["/etc/passwd"], 0, "'sort' takes no operands"),
        (["-n", "/etc/shadow"], 1, "operand"),
        (["--", "/etc/passwd"], 1, "operand"),
        (["--", "-n"], 1, "operand"),
        (["-"], 0, "operand"),
        (["+1"], 0, "operand"),  # obsolete `sort +POS` syntax
        (["-k"], 0, "needs a value"),
        (["--key"], 0, "needs a value"),
        (["-k", "-o"], 1, "not starting with '-'"),
        (["-k", "0"], 1, "KEYDEF"),
        (["-k", "2,2n;sh"], 1, "KEYDEF"),
        (["--key=1x"], 0, "KEYDEF"),
        (["--key="], 0, "KEYDEF"),
        (["-t", "ab"], 1, "one character"),
        (["-t"], 0, "needs a value"),
        (["--field-separator="], 0, "one character"),
        (["-t", "é"], 1, "one character"),
        (["--parallel=100"], 0, "from 1 to 8"),
        (["--parallel", "0"], 1, "from 1 to 8"),
        (["--parallel=-1"], 0, "not starting with '-'"),
        (["--sort=shell"], 0, "one of general-numeric"),
        (["-n\x00"], 0, "control character"),
        (["-n", "x\ny"], 1, "control character"),
        (["-k", "1\r"], 1, "control character"),
        (["-n", "\x1b[2J"], 1, "control character"),
        (["-n", "a" * 300], 1, "longer than 256"),
        (["--=x"], 0, "'--' is not an allowed option"),
    ],
    "wc": [
        (["--files0-from=/etc/passwd"], 0, "'--files0-from' is not an allowed option of 'wc'"),
        (["--files0-from", "/etc/passwd"], 0, "reads the files named in a file"),
        (["--files0=/etc/passwd"], 0, "abbreviation of '--files0-from'"),
        (["--files=/etc/passwd"], 0, "abbreviation"),
        (["-l", "--files0-from=-"], 1, "--files0-from"),
        (["/etc/passwd"], 0, "'wc' takes no operands"),
        (["-l", "/etc/passwd"], 1, "operand"),
        (["--", "/etc/passwd"], 1, "operand"),
        (["-lo"], 0, "'-o'"),
        (["-lx/etc/passwd"], 0, "'-x'"),
        (["--line"], 0, "abbreviations are refused: write --lines"),
        (["--lines=3"], 0, "takes no value"),
        (["--total=always"], 0, "'--total'"),
        (["--help"], 0, "'--help'"),
        (["-l\n"], 0, "control character"),
        (["-l", "\x00"], 1, "control character"),
    ],
    "base64": [
        (["/etc/passwd"], 0, "'base64' takes no operands"),
        (["-d", "/etc/shadow"], 1, "operand"),
        (["--", "/etc/passwd"], 1, "operand"),
        (["-"], 0, "operand"),
        (["-w", "-1"], 1, "not starting with '-'"),
        (["-w"], 0, "needs a value"),
        (["--wrap=abc"], 0, "from 0 to 65536"),
        (["-w99999999"], 0, "from 0 to 65536"),
        (["-w", "0x10"], 1, "from 0 to 65536"),
        (["-w", "+5"], 1, "from 0 to 65536"),
        (["-w", " 5"], 1, "from 0 to 65536"),
        (["--dec"], 0, "abbreviations are refused: write --decode"),
        (["-dx"], 0, "'-x'"),
        (["--decode=1"], 0, "takes no value"),
        (["-d\x00"], 0, "control character"),
    ],
}

ACCEPTED: dict[str, list[tuple[list[str], list[str]]]] = {
    "sort": [
        ([], []),
        (["-n", "-r"], ["--numeric-sort", "--reverse"]),
        (["-nr"], ["--numeric-sort", "--reverse"]),
        (["--numeric-sort", "--reverse"], ["--numeric-sort", "--reverse"]),
        (["-k2,2n"], ["--key", "2,2n"]),
        (["-k", "2,2n"], ["--key", "2,2n"]),
        (["--key=2,2n"], ["--key", "2,2n"]),
        (["--key", "2,2n"], ["--key", "2,2n"]),
        (["-nk2"], ["--numeric-sort", "--key", "2"]),
        (["-k1.2,3.0Vr", "-k3b"], ["--key", "1.2,3.0Vr", "--key", "3b"]),
        (["-t,"], ["--field-separator", ","]),
        (["-t", ","], ["--field-separator", ","]),
        (["--field-separator=,"], ["--field-separator", ","]),
        (["-t-"], ["--field-separator", "-"]),
        (["-t", "-"], ["--field-separator", "-"]),
        (["-t="], ["--field-separator", "="]),
        (["--field-separator=="], ["--field-separator", "="]),
        (["-t", "\t"], ["--field-separator", "\t"]),
        (["-nrt,", "-k2,2"], ["--numeric-sort", "--reverse", "--field-separator", ",", "--key", "2,2"]),
        (["-c"], ["--check"]),
        (["-C"], ["-C"]),
        (["-cu"], ["--check", "--unique"]),
        (["--parallel=2"], ["--parallel", "2"]),
        (["--parallel", "08"], ["--parallel", "8"]),
        (["--sort=version"], ["--sort", "version"]),
        (["-R"], ["--random-sort"]),
        (["-bdfg"], ["--ignore-leading-blanks", "--dictionary-order", "--ignore-case", "--general-numeric-sort"]),
        (["-ihMV"], ["--ignore-nonprinting", "--human-numeric-sort", "--month-sort", "--version-sort"]),
        (["-suz"], ["--stable", "--unique", "--zero-terminated"]),
        (["--debug", "-u", "--"], ["--debug", "--unique"]),
    ],
    "wc": [
        ([], []),
        (["-l"], ["--lines"]),
        (["--lines"], ["--lines"]),
        (["-lwc"], ["--lines", "--words", "--bytes"]),
        (["-L", "-m"], ["--max-line-length", "--chars"]),
        (["--max-line-length", "--"], ["--max-line-length"]),
    ],
    "base64": [
        ([], []),
        (["-d"], ["--decode"]),
        (["-di"], ["--decode", "--ignore-garbage"]),
        (["-w0"], ["--wrap", "0"]),
        (["-w", "76"], ["--wrap", "76"]),
        (["--wrap=64"], ["--wrap", "64"]),
        (["--wrap", "0"], ["--wrap", "0"]),
        (["-dw", "0"], ["--decode", "--wrap", "0"]),
    ],
}


def _cases(table: dict[str, list[tuple[list[str], int, str]]]) -> list[tuple[str, list[str], int, str]]:
    return [(tool, *case) for tool, cases in table.items() for case in cases]


@pytest.mark.parametrize(("tool", "args", "index", "says"), _cases(REFUSED))
def test_dangerous_or_unknown_arguments_are_refused_naming_the_argument(
    tool: str, args: list[str], index: int, says: str
) -> None:
    with pytest.raises(ArgumentRejected) as caught:
        canonical_args(tool, args)
    assert caught.value.index == index, caught.value
    assert says in caught.value.message, caught.value.message
    assert str(caught.value).startswith(f"args.{index}: ")


@pytest.mark.parametrize(("tool", "args", "canonical"), [(t, *c) for t, cases in ACCEPTED.items() for c in cases])
def test_allowed_arguments_are_accepted_in_their_canonical_form(
    tool: str, args: list[str], canonical: list[str]
) -> None:
    assert canonical_args(tool, args) == canonical
    assert canonical_args(tool, canonical) == canonical


def test_every_registered_tool_has_tests_of_both_kinds() -> None:
    assert set(TOOLS) == set(REFUSED) == set(ACCEPTED)


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_refused_option_of_the_real_tool_is_refused_in_every_spelling(tool: str) -> None:
    """Each option the real tool has that the grammar does not allow: long, every abbreviation, short."""
    grammar = TOOLS[tool].grammar
    allowed_long = {o.long for o in grammar.options if o.long}
    allowed_short = {o.short for o in grammar.options if o.short}
    for name, (_, short) in gnu_getopt.LONG[tool].items():
        if name in allowed_long:
            continue
        for end in range(1, len(name) + 1):
            with pytest.raises(ArgumentRejected):
                canonical_args(tool, [f"--{name[:end]}=x"])
            with pytest.raises(ArgumentRejected):
                canonical_args(tool, [f"--{name[:end]}", "x"])
        if short and short not in allowed_short:
            for args in ([f"-{short}", "x"], [f"-{short}x"], [f"-{''.join(sorted(allowed_short))[:2]}{short}x"]):
                with pytest.raises(ArgumentRejected):
                    canonical_args(tool, args)


# --- property: what the parser accepts is exactly what GNU getopt_long will see --------------------------


_FIELD = st.integers(1, 999).map(str)
_KEY_OPTS = st.text(alphabet="bdfghiMnRrV", max_size=2)
_KEYDEF = st.builds(
    lambda start, char, opts, end: f"{start}{char}{opts}{end}",
    _FIELD,
    st.one_of(st.just(""), _FIELD.map(lambda c: f".{c}")),
    _KEY_OPTS,
    st.one_of(st.just(""), st.builds(lambda f, c, o: f",{f}.{c}{o}", _FIELD, st.integers(0, 99), _KEY_OPTS)),
)
_HOSTILE_VALUES = st.one_of(
    st.sampled_from(["/tmp/x", "/bin/sh", "-", "--", "", "quiet", "0x1", "-1", "a\x00", "\n", "é", "+1"]),
    st.text(max_size=6),
)


def _valid_value(kind: ValueType | None) -> st.SearchStrategy[str]:
    if isinstance(kind, IntRange):
        return st.integers(kind.low, kind.high).flatmap(lambda n: st.sampled_from([str(n), f"0{n}"]))
    if isinstance(kind, OneOf):
        return st.sampled_from(kind.choices)
    if isinstance(kind, SingleChar):
        return st.one_of(
            st.sampled_from([",", "-", "\t", "=", ";", " "]), st.characters(min_codepoint=32, max_codepoint=126)
        )
    return _KEYDEF


@st.composite
def _valid_piece(draw: st.DrawFn, tool: str) -> list[str]:
    """One allowed option in one of getopt's spellings: `-x`, `-xVALUE`, `-x VALUE`, `--long[=VALUE]`, a bundle."""
    options = TOOLS[tool].grammar.options
    option = draw(st.sampled_from(options))
    value = draw(_valid_value(option.value)) if option.value else None
    spelling = draw(st.sampled_from(option.spellings()))
    if value is None:
        flags = [o.short for o in options if o.short and o.value is None]
        bundle = draw(st.lists(st.sampled_from(flags), max_size=3)) if spelling.startswith("-") and flags else []
        return [spelling + "".join(bundle)] if len(spelling) == 2 else [spelling]
    return draw(
        st.sampled_from([[spelling, value], [f"{spelling}={value}" if spelling.startswith("--") else spelling + value]])
    )


def _hostile_piece(tool: str) -> st.SearchStrategy[list[str]]:
    """An option the real tool has (in full, abbreviated, with a value), an operand, a bad value."""
    grammar = TOOLS[tool].grammar
    real = [f"--{name}" for name in gnu_getopt.LONG[tool]] + [s for s, _ in grammar.refused]
    shorts = "".join(o.short for o in grammar.options if o.short) + "oSTmyx"
    token = st.one_of(
        st.sampled_from(real),
        st.sampled_from(real).flatmap(
            lambda s: st.integers(min(3, len(s)), len(s)).map(lambda n: s[:n])
        ),  # abbreviations
        st.tuples(st.sampled_from(real), _HOSTILE_VALUES).map(lambda p: f"{p[0]}={p[1]}"),
        st.tuples(st.text(alphabet=shorts, min_size=1, max_size=4), _HOSTILE_VALUES).map(lambda p: f"-{p[0]}{p[1]}"),
        _HOSTILE_VALUES,
    )
    return st.lists(token, min_size=1, max_size=2)


def _args(tool: str) -> st.SearchStrategy[list[str]]:
    piece = st.one_of(_valid_piece(tool), _valid_piece(tool), _valid_piece(tool), _hostile_piece(tool))
    return st.lists(piece, max_size=5).map(lambda pieces: [token for p in pieces for token in p])


def _normal(options: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    return [(name, str(int(value)) if value and value.isdigit() else value) for name, value in options]


@pytest.mark.parametrize("tool", sorted(TOOLS))
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_accepted_args_are_exactly_what_gnu_getopt_sees(tool: str, data: st.DataObject) -> None:
    args = data.draw(_args(tool), label="args")
    grammar = TOOLS[tool].grammar
    try:
        parsed = grammar.parse(tool, args)
    except ArgumentRejected as exc:
        assert 0 <= exc.index < len(args)
        return
    canonical = parsed.canonical()
    assert grammar.canonical(tool, canonical) == canonical  # a fixed point
    seen, operands = gnu_getopt.parse(tool, canonical)
    assert operands == []  # never a file name
    allowed = {o.long or o.short for o in grammar.options}
    assert {name for name, _ in seen} <= allowed  # never a refused option, whatever GNU abbreviation rules do
    assert seen == [(o.long or o.short, value) for o, value in parsed.options]
    assert _normal(gnu_getopt.parse(tool, args)[0]) == _normal(seen)  # the user's form meant the same


# --- registration --------------------------------------------------------------------------------------


def test_a_tool_without_a_grammar_cannot_be_declared() -> None:
    with pytest.raises(TypeError):
        Tool(name="cat", candidates=("/usr/bin/cat",), description="cat")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="needs an argument grammar"):
        Tool(name="cat", candidates=("/usr/bin/cat",), grammar=None, description="cat")  # type: ignore[arg-type]


def test_registration_refuses_ambiguous_or_unsafe_declarations() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(Tool(name="sort", candidates=("/usr/bin/sort",), grammar=Grammar(options=()), description="x"))
    with pytest.raises(ValueError, match="absolute"):
        Tool(name="cat", candidates=("cat",), grammar=Grammar(options=()), description="x")
    with pytest.raises(ValueError, match="both allowed and refused"):
        Grammar(options=(Option("o", "output", "write a file", IntRange(0, 1)),), refused=(("-o", "writes a file"),))
    with pytest.raises(ValueError, match="duplicate short"):
        Grammar(options=(Option("n", None, "a"), Option("n", "numeric", "b")))
    with pytest.raises(ValueError, match="bad or duplicate long"):
        Grammar(options=(Option(None, "--key", "dashes belong to the spelling, not the name"),))
    assert "cat" not in TOOLS


def test_the_readme_lists_each_tools_allowed_arguments() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert table() in readme, "regenerate with: PYTHONPATH=. .venv/bin/python -m devtools.tooldoc"
    assert re.search(r"anything else .*422", readme, re.IGNORECASE | re.DOTALL)
