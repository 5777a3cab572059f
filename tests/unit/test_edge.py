"""The request-validation edge (chalicelib/edge): bodies, headers, path and query parameters, cursors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chalice.app import MultiDict

from chalicelib.config import settings_from_env
from chalicelib.domain.errors import (
    BadRequest,
    CodeRunnerError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from chalicelib.edge import body, cursors, headers, params

MB = 6 * 1024 * 1024


def refused(exc_type: type[CodeRunnerError], raw: bytes | str) -> CodeRunnerError:
    with pytest.raises(exc_type) as err:
        body.parse(raw.encode() if isinstance(raw, str) else raw, MB)
    return err.value


def fields(exc: CodeRunnerError) -> list[str]:
    return [d["field"] for d in exc.details]


# -- bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [33, 1_000, 50_000, 200_000])
@pytest.mark.parametrize("opener", ["[", '{"a":', '[{"a":'])
def test_deep_nesting_is_a_400_whatever_the_depth(depth: int, opener: str) -> None:
    """Refused by the scan of the raw bytes: the parser (and its recursion limit) never sees the body."""
    exc = refused(BadRequest, opener * depth)
    assert "deeper than 32 levels" in exc.message and exc.details == {"max_depth": 32}


def test_nesting_up_to_the_limit_is_fine_and_brackets_inside_strings_do_not_count() -> None:
    assert body.parse(("[" * 32 + "]" * 32).encode(), MB) is not None
    assert body.parse(json.dumps({"stdin": "[" * 10_000, "s": '\\"[[[' * 100}).encode(), MB)["stdin"] == "[" * 10_000
    assert body.nesting_within(b'["\\\\", [[]]]', 3) and not body.nesting_within(b'["\\\\", [[]]]', 2)
    assert not body.nesting_within(b'["\\"", ' + b"[" * 40, 32)  # an escaped quote does not end the string


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"limits": {"memory_mb": 1' + "0" * 5000 + "}}", "limits.memory_mb"),  # past Python's 4,300 digits
        ('{"limits": {"wall_time_s": 1e400}}', "limits.wall_time_s"),  # infinite as a float
        ('{"limits": {"wall_time_s": NaN}}', "limits.wall_time_s"),
        ('{"limits": {"cpu_time_s": -Infinity}}', "limits.cpu_time_s"),
        ('{"tests": [{"stdin": "\\ud800"}]}', "tests.0.stdin"),  # a lone surrogate: no UTF-8 for it
        ('{"args": ["ok", "\\udfff"]}', "args.1"),
        ('{"\\ud83d": 1}', "\ufffd"),  # in a member name (shown printable)
        ('{"a\\u0000b": 1}', "a\ufffdb"),
        ('{"source": "x", "source": "y"}', "source"),  # duplicate member
        ('"\\udc00"', "(body)"),
    ],
)
def test_values_no_backend_can_carry_are_a_422_naming_the_field(raw: str, field: str) -> None:
    assert field in fields(refused(ValidationFailed, raw))


def test_a_valid_surrogate_pair_is_one_character_and_fine() -> None:
    assert body.parse(b'{"stdin": "\\ud83d\\ude00"}', MB) == {"stdin": "\U0001f600"}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"\xff\xfe{}", BadRequest),  # not UTF-8 (UTF-16 with a BOM)
        (b'{"a": "\xc3"}', BadRequest),
        (b"{not json", BadRequest),
        (b"", BadRequest),
        (b"x" * (MB + 1), PayloadTooLarge),
    ],
    ids=["utf16", "truncated-utf8", "not-json", "empty", "too-large"],
)
def test_unreadable_bodies(raw: bytes, status: type[CodeRunnerError]) -> None:
    exc = refused(status, raw)
    assert "not json" not in exc.message  # positions, never content


def test_a_utf8_bom_is_tolerated() -> None:
    assert body.parse(b'\xef\xbb\xbf{"a": 1}', MB) == {"a": 1}


@pytest.mark.parametrize(
    "content_type", [None, "", "application/json", "Application/JSON; charset=UTF-8", "text/plain"]
)
def test_media_types_read_as_json(content_type: str | None) -> None:
    body.check_media_type(content_type)


@pytest.mark.parametrize(
    "content_type", ["application/xml", "application/json; charset=utf-16", "multipart/form-data; boundary=x", "*/*"]
)
def test_other_media_types_are_415_naming_the_header_without_echo(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType) as err:
        body.check_media_type(content_type)
    assert err.value.details[0]["field"] == "Content-Type" and content_type not in err.value.message


# -- headers -------------------------------------------------------------------------------------------

KEY = "cr_" + "A" * 43


@pytest.mark.parametrize(
    "given",
    [
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"bearer   {KEY}  "},
        {"x-api-key": KEY},
        {"x-api-key": KEY, "authorization": "Basic Zm9v"},  # X-API-Key wins
    ],
)
def test_api_key_headers(given: dict[str, str]) -> None:
    assert headers.api_key(given) == KEY


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"authorization": ""},
        {"authorization": "Basic Zm9vOmJhcg=="},
        {"authorization": "Bearer"},
        {"authorization": "Bearer " + "a" * 257},
        {"authorization": f"Bearer {KEY}\x00"},
        {"authorization": "Bearer \ud800"},
        {"x-api-key": "é" * 10},
        {"x-api-key": f"{KEY} {KEY}"},
    ],
)
def test_bad_api_key_headers_are_401_and_never_echoed(given: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as err:
        headers.api_key(given)
    shown = json.dumps([err.value.message, err.value.details])
    assert KEY not in shown and "Zm9v" not in shown


@pytest.mark.parametrize("value", ["k", "order-42 retry#1", "x" * 255])
def test_idempotency_keys(value: str) -> None:
    assert headers.idempotency_key({"idempotency-key": value}) == value


@pytest.mark.parametrize("value", ["", "x" * 256, "k" * 5000, "tab\there", "naïve", "nul\x00"])
def test_bad_idempotency_keys_are_422_naming_the_header(value: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        headers.idempotency_key({"idempotency-key": value})
    assert err.value.details == [
        {"field": "Idempotency-Key", "in": "header", "message": err.value.details[0]["message"]}
    ]


def test_no_idempotency_key() -> None:
    assert headers.idempotency_key({}) is None


# -- path and query parameters ---------------------------------------------------------------------------


def test_job_ids_are_the_platforms_shape_or_404_without_echo() -> None:
    from chalicelib.services.deps import new_job_id

    issued = new_job_id()
    assert params.job_id(issued) == issued
    for bad in ("", "x", issued.upper(), issued + "0", issued[:-1] + "g", issued + "\n", "a" * 3000, "%00" * 11):
        with pytest.raises(NotFound) as err:
            params.job_id(bad)
        assert bad not in err.value.message or not bad


@pytest.mark.parametrize(
    ("raw", "wait"), [(None, 0.0), ("", 0.0), ("0", 0.0), ("2.5", 2.5), ("20", 20.0), ("1e1", 10.0), ("0.0001", 0.0001)]
)
def test_wait(raw: str | None, wait: float) -> None:
    assert params.wait(None if raw is None else MultiDict({"wait": [raw]})) == wait


@pytest.mark.parametrize("raw", ["21", "-1", "nan", "inf", "9e999", "3e1", " 1", "1_0", "١", "9" * 500, "0x10"])
def test_bad_wait_is_422_naming_it_without_echo(raw: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        params.wait(MultiDict({"wait": [raw]}))
    assert err.value.details[0]["field"] == "wait" and raw not in json.dumps(err.value.details)


def test_a_parameter_given_twice_is_422_and_unknown_ones_are_ignored() -> None:
    with pytest.raises(ValidationFailed):
        params.limit(MultiDict({"limit": ["5", "6"]}))
    assert params.limit(MultiDict({"limit": ["5"], "_": ["1700000000"], "x" * 1000: ["y" * 10_000]})) == 5
    for raw in ("0", "101", "1_0", "+5", "5.0"):
        with pytest.raises(ValidationFailed):
            params.limit(MultiDict({"limit": [raw]}))


# -- cursors -------------------------------------------------------------------------------------------


@pytest.fixture
def settings() -> Any:
    return settings_from_env({"CODERUNNER_CURSOR_SECRET": "s3cret"})


def test_a_cursor_comes_back_as_the_stores_own(settings: Any) -> None:
    inner = "eyJpZCI6IHsiUyI6ICJ4In19"
    sealed = cursors.seal(settings, "acme", inner)
    assert sealed is not None and cursors.unseal(settings, "acme", sealed) == inner
    assert cursors.seal(settings, "acme", None) is None and cursors.unseal(settings, "acme", None) is None


def test_a_cursor_edited_forged_or_of_another_owner_is_422(settings: Any) -> None:
    sealed = cursors.seal(settings, "acme", "acme#20")
    assert sealed is not None
    body_part, _, tag = sealed.partition(".")
    forged = [
        cursors.seal(settings, "acme", "acme#40").partition(".")[0] + "." + tag,  # type: ignore[union-attr]
        body_part + "." + tag[:-1] + ("A" if tag[-1] != "A" else "B"),
        body_part,
        "eyJpZCI6IDV9",
        "x" * 5000,
        "a.b.c",
        "\ud800.x",
        cursors.seal(settings_from_env({"CODERUNNER_CURSOR_SECRET": "other"}), "acme", "acme#20"),
    ]
    for token in forged:
        with pytest.raises(ValidationFailed) as err:
            cursors.unseal(settings, "acme", token)
        assert err.value.details[0]["field"] == "cursor"
    with pytest.raises(ValidationFailed):
        cursors.unseal(settings, "globex", sealed)


def test_a_key_pasted_as_a_tool_or_runtime_name_is_not_echoed(deps: Any, key: str) -> None:
    from chalicelib.services.submit import submit_job

    for job in ({"tool": key}, {"runtime": "py\u202eth", "source": "x"}):
        with pytest.raises(ValidationFailed) as err:
            submit_job(deps, key, job)
        assert key not in json.dumps([err.value.message, err.value.details]) and "\u202e" not in err.value.message
    with pytest.raises(ValidationFailed) as err:
        submit_job(deps, key, {"runtime": "cobol", "source": "x"})
    assert "'cobol'" in err.value.message  # a plain name is still named
