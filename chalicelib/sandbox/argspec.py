"""Argument grammars for registered tools, parsed the way GNU `getopt_long` would, but strictly.

GNU tools accept unambiguous abbreviations of long options (`--compress` for `--compress-program`), bundled
short flags with attached values (`-no/tmp/x` is `-n -o /tmp/x`) and operands anywhere: each of these can
hide an option that runs a program or names a file. A `Grammar` lists exactly what a tool allows; `parse`
accepts nothing else (no abbreviation, no operand unless declared) and `ParsedArgs.canonical` re-emits what
it accepted in one form (full long names, or a short flag with no long name; every value a separate argv
item), so what the real tool receives is exactly what was validated.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

MAX_ARG_CHARS = 256
_LONG_NAME = re.compile(r"[a-z][a-z0-9-]*")


class ArgumentRejected(ValueError):
    """One argument breaks the tool's grammar; `index` is its position in the user's `args`."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"args.{index}: {message}")
        self.index = index
        self.message = message


def shown(text: str, limit: int = 40) -> str:
    """`text` quoted for an error message: escaped, and cut so a huge argument is not echoed whole."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


class ValueType(Protocol):
    """What an option's value (or an operand) may be. `check` returns the canonical value or raises
    ValueError saying why; `leading_dash` says whether a value may start with '-'."""

    leading_dash: ClassVar[bool]

    def check(self, raw: str) -> str: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class IntRange:
    """A decimal integer from `low` to `high` (no sign, no suffix); canonical without leading zeros."""

    low: int
    high: int
    leading_dash: ClassVar[bool] = False

    def check(self, raw: str) -> str:
        if not re.fullmatch(r"[0-9]{1,9}", raw) or not self.low <= int(raw) <= self.high:
            raise ValueError(self.describe())
        return str(int(raw))

    def describe(self) -> str:
        return f"an integer from {self.low} to {self.high}"


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of words."""

    choices: tuple[str, ...]
    leading_dash: ClassVar[bool] = False

    def check(self, raw: str) -> str:
        if raw not in self.choices:
            raise ValueError(self.describe())
        return raw

    def describe(self) -> str:
        return "one of " + ", ".join(self.choices)


@dataclass(frozen=True)
class Matching:
    """A string the whole of which matches `pattern` (e.g. a sort KEYDEF); `name` is how users know it."""

    name: str
    pattern: str
    leading_dash: ClassVar[bool] = False

    def check(self, raw: str) -> str:
        if not re.fullmatch(self.pattern, raw):
            raise ValueError(f"not a valid {self.name}")
        return raw

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class SingleChar:
    """One printable ASCII character, or a tab (a field separator); '-' is a valid separator."""

    leading_dash: ClassVar[bool] = True

    def check(self, raw: str) -> str:
        if len(raw) != 1 or not (raw == "\t" or " " <= raw <= "~"):
            raise ValueError(self.describe())
        return raw

    def describe(self) -> str:
        return "one character (printable ASCII or a tab)"


@dataclass(frozen=True)
class Option:
    """An allowed option: its short letter and/or long name (without dashes), and its value type if it
    takes one (a required value: GNU optional values exist only in the `--name=value` form)."""

    short: str | None
    long: str | None
    help: str
    value: ValueType | None = None

    @property
    def spelling(self) -> str:
        """The canonical spelling: the full long name when there is one, else the short flag."""
        return f"--{self.long}" if self.long else f"-{self.short}"

    def spellings(self) -> list[str]:
        """Every spelling this grammar accepts (an abbreviation never is)."""
        return [s for s in (f"-{self.short}" if self.short else None, f"--{self.long}" if self.long else None) if s]


@dataclass(frozen=True)
class ParsedArgs:
    """What a grammar accepted: options in the order given (with canonical values), then operands."""

    options: tuple[tuple[Option, str | None], ...]
    operands: tuple[str, ...]

    def canonical(self) -> list[str]:
        """The argv tail the tool runs: `--long VALUE` or `-s`, then `--` and the operands if any."""
        argv: list[str] = []
        for option, value in self.options:
            argv += [option.spelling] if value is None else [option.spelling, value]
        return argv + (["--", *self.operands] if self.operands else [])


@dataclass(frozen=True)
class Grammar:
    """A tool's whole argument language: allowed options, the operands it takes (none by default: for a
    GNU filter an operand names a file), and options it must never allow, each with the reason."""

    options: tuple[Option, ...]
    operands: tuple[ValueType, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()
    _short: dict[str, Option] = field(init=False, repr=False, compare=False, hash=False)
    _long: dict[str, Option] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        short: dict[str, Option] = {}
        long: dict[str, Option] = {}
        for option in self.options:
            _check_declaration(option, short, long)
        allowed = {s for option in self.options for s in option.spellings()}
        clash = sorted(allowed & {spelling for spelling, _ in self.refused})
        if clash:
            raise ValueError(f"options both allowed and refused: {clash}")
        object.__setattr__(self, "_short", short)
        object.__setattr__(self, "_long", long)

    def by_short(self, letter: str) -> Option | None:
        return self._short.get(letter)

    def by_long(self, name: str) -> Option | None:
        return self._long.get(name)

    def reason_refused(self, spelling: str) -> str | None:
        return next((why for refused, why in self.refused if refused == spelling), None)

    def parse(self, tool: str, args: Sequence[str]) -> ParsedArgs:
        """Parse `args` like getopt_long, accepting only this grammar; ArgumentRejected names the first
        argument that breaks it."""
        return _Parser(tool, self, args).run()

    def canonical(self, tool: str, args: Sequence[str]) -> list[str]:
        """`parse(...).canonical()`: the arguments the tool really receives."""
        return self.parse(tool, args).canonical()


def _check_declaration(option: Option, short: dict[str, Option], long: dict[str, Option]) -> None:
    """A grammar that could not be parsed unambiguously is a programming error, found at import."""
    if option.short is None and option.long is None:
        raise ValueError(f"option {option.help!r} has neither a short nor a long name")
    if option.short is not None:
        if len(option.short) != 1 or not (option.short.isascii() and option.short.isalnum()) or option.short in short:
            raise ValueError(f"bad or duplicate short option {option.short!r}")
        short[option.short] = option
    if option.long is not None:
        if not _LONG_NAME.fullmatch(option.long) or option.long in long:
            raise ValueError(f"bad or duplicate long option {option.long!r}")
        long[option.long] = option


def _check_text(index: int, arg: str) -> None:
    """No NUL (it cannot be in argv), no control character but tab, nothing absurdly long."""
    if len(arg) > MAX_ARG_CHARS:
        raise ArgumentRejected(index, f"{shown(arg)} is longer than {MAX_ARG_CHARS} characters")
    for char in arg:
        if char != "\t" and unicodedata.category(char) in ("Cc", "Cs"):
            raise ArgumentRejected(index, f"{shown(arg)} contains a control character or lone surrogate ({char!r})")


class _Parser:
    """One pass over the user's args with getopt_long's rules; the first violation raises."""

    def __init__(self, tool: str, grammar: Grammar, args: Sequence[str]) -> None:
        self.tool, self.grammar, self.args = tool, grammar, list(args)
        self.next = 0
        self.options: list[tuple[Option, str | None]] = []
        self.operands: list[str] = []

    def run(self) -> ParsedArgs:
        for index, arg in enumerate(self.args):
            _check_text(index, arg)
        only_operands = False
        while self.next < len(self.args):
            index, arg = self.next, self.args[self.next]
            self.next += 1
            if only_operands or arg == "-" or not arg.startswith("-"):
                self._operand(index, arg)
            elif arg == "--":
                only_operands = True
            elif arg.startswith("--"):
                self._long(index, arg)
            else:
                self._shorts(index, arg)
        return ParsedArgs(tuple(self.options), tuple(self.operands))

    def _long(self, index: int, arg: str) -> None:
        name, equals, attached = arg[2:].partition("=")
        option = self.grammar.by_long(name)
        if option is None:
            raise ArgumentRejected(index, self._not_allowed(f"--{name}"))
        if option.value is None:
            if equals:
                raise ArgumentRejected(index, f"'--{name}' takes no value (got {shown(arg)})")
            self.options.append((option, None))
        elif equals:
            self.options.append((option, self._value(index, option, option.value, attached)))
        else:
            self._separate_value(index, option, option.value)

    def _shorts(self, index: int, arg: str) -> None:
        for position in range(1, len(arg)):
            option = self.grammar.by_short(arg[position])
            if option is None:
                inside = f" (in {shown(arg)})" if len(arg) > 2 else ""
                raise ArgumentRejected(index, self._not_allowed(f"-{arg[position]}") + inside)
            if option.value is None:
                self.options.append((option, None))
                continue
            rest = arg[position + 1 :]  # getopt: the rest of a bundle is the value, if any
            if rest:
                self.options.append((option, self._value(index, option, option.value, rest)))
            else:
                self._separate_value(index, option, option.value)
            return

    def _separate_value(self, index: int, option: Option, kind: ValueType) -> None:
        # getopt takes the next argument as the value whatever it looks like: so do we (then check it).
        if self.next >= len(self.args):
            raise ArgumentRejected(index, f"'{option.spelling}' needs a value: {kind.describe()}")
        value_index = self.next
        self.next += 1
        self.options.append((option, self._value(value_index, option, kind, self.args[value_index])))

    def _value(self, index: int, option: Option, kind: ValueType, raw: str) -> str:
        try:
            return _checked(kind, raw)
        except ValueError as exc:
            raise ArgumentRejected(index, f"{shown(raw)} is not a valid value for '{option.spelling}': {exc}") from exc

    def _operand(self, index: int, arg: str) -> None:
        kinds = self.grammar.operands
        if len(self.operands) >= len(kinds):
            what = "no operands" if not kinds else f"at most {len(kinds)} operand(s)"
            raise ArgumentRejected(
                index, f"{shown(arg)} is an operand (a file name to '{self.tool}'); '{self.tool}' takes {what}"
            )
        try:
            self.operands.append(_checked(kinds[len(self.operands)], arg))
        except ValueError as exc:
            raise ArgumentRejected(index, f"{shown(arg)} is not a valid operand: {exc}") from exc

    def _not_allowed(self, spelling: str) -> str:
        allowed = ", ".join("/".join(o.spellings()) for o in self.grammar.options)
        return f"'{spelling}' is not an allowed option of '{self.tool}'{self._hint(spelling)}; allowed: {allowed}"

    def _hint(self, spelling: str) -> str:
        """Why, when we know: a refused option's reason, or that abbreviations are never accepted."""
        why = self.grammar.reason_refused(spelling)
        if why:
            return f" ({why})"
        if not spelling.startswith("--") or spelling == "--":
            return ""
        refused = [name for name, _ in self.grammar.refused if name.startswith(spelling)]
        if refused:
            return f" (an abbreviation of '{refused[0]}': {self.grammar.reason_refused(refused[0])})"
        full = [o.spelling for o in self.grammar.options if o.long and o.long.startswith(spelling[2:])]
        return f" (abbreviations are refused: write {' or '.join(full)})" if full else ""


def _checked(kind: ValueType, raw: str) -> str:
    """`kind.check(raw)`, after refusing a leading '-' the type does not allow (it would read as an option)."""
    if raw.startswith("-") and not kind.leading_dash:
        raise ValueError(f"{kind.describe()}, not starting with '-'")
    return kind.check(raw)
