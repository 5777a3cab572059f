"""Request bodies: bounded before they are parsed, and refused when they hold what the backends cannot carry.

A body passes, in order: its size; its media type; UTF-8; a nesting-depth scan of the raw bytes (no parser
recursion ever sees a deep body); `json.loads` with hooks that keep out-of-range numbers, NaN/Infinity and
duplicate keys as markers; and one walk that turns each marker, each lone surrogate (`"\\ud800"`: valid JSON,
but not encodable as UTF-8, so DynamoDB and the sandbox could never take it) and each NUL in a member name into
a 422 naming the field. What the fields may hold beyond that (NUL in `args`, sizes) is the request models' job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from chalicelib.domain.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

MAX_DEPTH = 32  # a submit nests 4 levels, a batch 6: far below any parser's recursion limit
MAX_NUMBER_CHARS = 40  # longer number literals are refused before Python converts them (ints: 4,300 digits max)
MAX_REPORTED = 10  # problems listed in one 422
# Media types a body may be sent as: JSON, and what curl (-d) and browsers' simple requests send by default.
BODY_MEDIA_TYPES = frozenset({"application/json", "application/x-www-form-urlencoded", "text/plain"})
_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})

_STRINGS = re.compile(rb'"[^"]*(?:"|\Z)')  # after escapes are gone, a string is quote to quote (or to the end)
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]"), bytes(set(range(256)) - set(b"[]{}"))
_SURROGATE = re.compile("[\ud800-\udfff]")
_OUT_OF_RANGE = f"a number out of range (finite, at most {MAX_NUMBER_CHARS} characters)"


class _Invalid:
    """A value the parser met but the platform cannot carry (kept to be reported with its field path)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Members(dict[str, Any]):
    """An object whose text repeated member names (`duplicates`)."""

    duplicates: list[str]


def check_media_type(content_type: str | None) -> None:
    """A body must be JSON (also accepted as curl's form type and text/plain), in UTF-8; else 415."""
    if content_type is None or not content_type.strip():
        return  # no header: JSON, as the API documents
    media, _, params = content_type.partition(";")
    if media.strip().lower() not in BODY_MEDIA_TYPES:
        raise _unsupported("the body must be JSON: send 'Content-Type: application/json'")
    for param in params.split(";"):
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset" and val.strip().strip('"').lower() not in _CHARSETS:
            raise _unsupported("the body must be UTF-8: send 'Content-Type: application/json' without another charset")


def _unsupported(message: str) -> UnsupportedMediaType:
    return UnsupportedMediaType(message, [{"field": "Content-Type", "in": "header", "message": message}])


def parse(raw: bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of a body, or the 4xx that says what is wrong with it (never a parser's own error)."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes", {"max_bytes": max_bytes})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8 (byte {exc.start})", {"position": exc.start}) from exc
    if not nesting_within(raw, max_depth):
        raise BadRequest(
            f"the body nests arrays and objects deeper than {max_depth} levels, or its brackets do not balance",
            {"max_depth": max_depth},
        )
    try:
        value = json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_members,
            parse_int=_integer,
            parse_float=_decimal,
            parse_constant=_constant,
        )
    except RecursionError as exc:  # unreachable after the depth scan; kept so a parser change cannot 500
        raise BadRequest(f"the body nests deeper than {max_depth} levels") from exc
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {_position(exc)}") from exc
    problems = list(_problems(value))
    if problems:
        raise ValidationFailed(f"{problems[0]['field']}: {problems[0]['message']}", problems[:MAX_REPORTED])
    return value


def nesting_within(raw: bytes, max_depth: int) -> bool:
    """Whether the JSON text nests at most `max_depth` levels (False too when its brackets do not balance).

    Runs at C speed on up to megabytes, without recursion: drop escaped backslashes and quotes (pairing them
    left to right, as JSON does), then strings, then everything but brackets; each pass of removing `[]`
    pairs then peels one level off every innermost container.
    """
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return True
    skeleton = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = _STRINGS.sub(b"", skeleton).translate(*_BRACKETS_ONLY)
    for _ in range(max_depth):
        peeled = skeleton.replace(b"[]", b"")
        if len(peeled) == len(skeleton):
            break
        skeleton = peeled
    return b"[" not in skeleton


def _position(exc: ValueError) -> str:
    """The decoder's message names a position, never content (no echo of what the client sent)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return "unreadable"


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) == len(pairs):
        return members
    seen: set[str] = set()
    repeated = _Members(members)
    repeated.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    return repeated


def _integer(text: str) -> int | _Invalid:
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        return _Invalid(_OUT_OF_RANGE)
    return int(text)


def _decimal(text: str) -> float | _Invalid:
    number = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(number):
        return _Invalid(_OUT_OF_RANGE)
    return number


def _constant(text: str) -> _Invalid:
    return _Invalid(f"{text} is not a JSON number")


def _problems(value: Any) -> Iterator[dict[str, str]]:
    """Every marker, lone surrogate and NUL member name in a parsed body, with its field path (iteratively)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        here = path or "(body)"
        if isinstance(item, _Invalid):
            yield {"field": here, "message": item.reason}
        elif isinstance(item, str):
            if _SURROGATE.search(item):
                yield {"field": here, "message": "a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character"}
        elif isinstance(item, dict):
            for name in getattr(item, "duplicates", []):
                yield {"field": _join(path, name), "message": "given more than once in the same object"}
            for name, member in reversed(item.items()):
                field = _join(path, name)
                if _SURROGATE.search(name) or "\x00" in name:
                    yield {"field": field, "message": "a member name must be text without NUL or lone surrogates"}
                stack.append((member, field))
        elif isinstance(item, list):
            stack.extend((member, _join(path, str(i))) for i, member in reversed(list(enumerate(item))))


def _join(path: str, name: str) -> str:
    """A field path as 422s write them (`tests.0.stdin`); client-chosen names made printable and bounded."""
    shown = _SURROGATE.sub("\ufffd", name)
    shown = "".join(c if c.isprintable() else "\ufffd" for c in shown[:64]) + ("..." if len(name) > 64 else "")
    return f"{path}.{shown}" if path else shown
