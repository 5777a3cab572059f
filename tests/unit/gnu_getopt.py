"""A reference model of GNU `getopt_long` with the real option tables of coreutils 9.1 `sort`, `wc`, `base64`.

The tests parse argv with it to see what the real tool would see: every option it knows (abbreviations
included), its value, and the operands (file names). It is independent of `chalicelib.sandbox.argspec`.
"""

from __future__ import annotations

NO, REQUIRED, OPTIONAL = 0, 1, 2

# Long options: name -> (has_arg, short letter or None). From coreutils 9.1 src/sort.c, wc.c, base64.c.
LONG: dict[str, dict[str, tuple[int, str | None]]] = {
    "sort": {
        "ignore-leading-blanks": (NO, "b"),
        "check": (OPTIONAL, "c"),  # sort.c: `--check` with no value is `-c`
        "compress-program": (REQUIRED, None),
        "debug": (NO, None),
        "dictionary-order": (NO, "d"),
        "ignore-case": (NO, "f"),
        "files0-from": (REQUIRED, None),
        "general-numeric-sort": (NO, "g"),
        "ignore-nonprinting": (NO, "i"),
        "key": (REQUIRED, "k"),
        "merge": (NO, "m"),
        "month-sort": (NO, "M"),
        "numeric-sort": (NO, "n"),
        "human-numeric-sort": (NO, "h"),
        "version-sort": (NO, "V"),
        "random-sort": (NO, "R"),
        "random-source": (REQUIRED, None),
        "sort": (REQUIRED, None),
        "output": (REQUIRED, "o"),
        "reverse": (NO, "r"),
        "stable": (NO, "s"),
        "batch-size": (REQUIRED, None),
        "buffer-size": (REQUIRED, "S"),
        "field-separator": (REQUIRED, "t"),
        "temporary-directory": (REQUIRED, "T"),
        "unique": (NO, "u"),
        "zero-terminated": (NO, "z"),
        "parallel": (REQUIRED, None),
        "help": (NO, None),
        "version": (NO, None),
    },
    "wc": {
        "bytes": (NO, "c"),
        "chars": (NO, "m"),
        "lines": (NO, "l"),
        "words": (NO, "w"),
        "files0-from": (REQUIRED, None),
        "max-line-length": (NO, "L"),
        "help": (NO, None),
        "version": (NO, None),
    },
    "base64": {
        "decode": (NO, "d"),
        "wrap": (REQUIRED, "w"),
        "ignore-garbage": (NO, "i"),
        "help": (NO, None),
        "version": (NO, None),
    },
}
# Short option strings: a letter followed by ':' takes a value.
SHORT = {"sort": "bcCdfghik:mMno:rRsS:t:T:uVy:z", "wc": "clLmw", "base64": "diw:"}


class GetoptError(ValueError):
    """The real tool would refuse this argv (unknown or ambiguous option, missing value)."""


Parsed = tuple[list[tuple[str, str | None]], list[str]]


def _long(tool: str, arg: str, rest: list[str]) -> tuple[str, str | None]:
    name, equals, value = arg[2:].partition("=")
    table = LONG[tool]
    if name not in table:
        matches = [full for full in table if full.startswith(name)]
        if len(matches) != 1 or not name:
            raise GetoptError(f"unrecognized or ambiguous option '--{name}'")
        name = matches[0]
    has_arg, _ = table[name]
    if has_arg == NO and equals:
        raise GetoptError(f"'--{name}' doesn't allow an argument")
    if has_arg == REQUIRED and not equals:
        if not rest:
            raise GetoptError(f"'--{name}' requires an argument")
        return name, rest.pop(0)
    return name, value if equals else None


def _short_name(tool: str, letter: str) -> str:
    for name, (_, short) in LONG[tool].items():
        if short == letter:
            return name
    return letter


def _shorts(tool: str, arg: str, rest: list[str]) -> list[tuple[str, str | None]]:
    spec, found = SHORT[tool], []
    for position in range(1, len(arg)):
        letter = arg[position]
        where = spec.find(letter)
        if where < 0 or letter == ":":
            raise GetoptError(f"invalid option -- '{letter}'")
        if spec[where + 1 : where + 2] != ":":
            found.append((_short_name(tool, letter), None))
            continue
        value = arg[position + 1 :]
        if not value:
            if not rest:
                raise GetoptError(f"option requires an argument -- '{letter}'")
            value = rest.pop(0)
        found.append((_short_name(tool, letter), value))
        break
    return found


def parse(tool: str, argv: list[str]) -> Parsed:
    """(options as (long name, or the letter when it has none; value), operands) as GNU would see them."""
    rest, options, operands = list(argv), [], []
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            operands += rest
            break
        if arg == "-" or not arg.startswith("-"):
            operands.append(arg)
        elif arg.startswith("--"):
            options.append(_long(tool, arg, rest))
        else:
            options += _shorts(tool, arg, rest)
    return options, operands
