"""Property: whatever a client sends, the API answers as DESIGN.md section 3 promises.

Hypothesis generates hostile requests (bodies nested 50,000 deep, numbers of 5,000 digits, lone surrogates,
NULs and control characters, oversized strings, a wrong type at every field of the submit schema, random and
oversized headers, job ids and cursors) and sends them through `chalice.test.Client` to the app on a moto
server. Every answer must hold:
- never a 500 (nor any 5xx but 503, and a 503 only with `Retry-After`);
- every 4xx/5xx is the house JSON `{"error": {"code", "message", ...}}`;
- no response (body or header) contains the planted API key or its hash, however it was mangled;
- no AWS request was refused by the backend (a botocore hook counts any 4xx but a lost condition) and the
  app counted no `BackendRejected` or `UnhandledErrors`.

`make test` runs a fixed set of a few hundred examples (profile `ci`, derandomized); `make fuzz` runs many
thousands of fresh ones (CODERUNNER_FUZZ=fuzz; FUZZ_EXAMPLES sets how many).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest
from chalice.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from chalicelib.adapters.aws import client as aws_client
from chalicelib.bootstrap import get_deps
from chalicelib.domain.errors import ValidationFailed
from chalicelib.edge import params
from chalicelib.services.keys import hash_key
from tests.fakes_delivery import FakeResolver
from tests.integration.helpers import body, new_key

_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]
# Profiles of this test only (not loaded globally): `ci` for make test, `fuzz` for make fuzz.
PROFILES = {
    "ci": settings(max_examples=250, derandomize=True, deadline=None, database=None, suppress_health_check=_HEALTH),
    "fuzz": settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
        deadline=None,
        database=None,
        suppress_health_check=_HEALTH,
        print_blob=True,
    ),
}
PROFILE = PROFILES[os.environ.get("CODERUNNER_FUZZ", "ci")]

# -- values --------------------------------------------------------------------------------------------

NASTY_CHARS = ["\x00", "\x01", "\x1b", "\n", "\t", "\x7f", "\u202e", "\ufeff", "\ud800", "\udfff", "é", "😀", "a"]
nasty_text = st.text(alphabet=st.sampled_from(NASTY_CHARS), max_size=12)
any_text = st.one_of(st.text(max_size=30), nasty_text, st.text(st.characters(codec="utf-8"), max_size=30))
SIZES = st.one_of(st.integers(0, 300), st.sampled_from([255, 256, 1025, 2049, 4097, 5001, 65_537, 196_609, 300_000]))
long_text = st.builds(lambda c, n: c * n, st.sampled_from(["a", "\x00", "é", "\ud800", "["]), SIZES)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 10**40, 10**41, 1e-400, 1e308]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text, long_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)


def sometimes(draw: st.DrawFn, percent: int) -> bool:
    return draw(st.integers(0, 99)) < percent


VALID = {"runtime": "python", "source": "print(1)", "stdin": "", "args": [], "limits": {"wall_time_s": 1}}
TOOL = {"tool": "sort", "args": ["-n"], "stdin": "2\n1\n"}
# Every field of the submit schema, and the nested ones, as (path in the body, a valid value).
FIELDS: list[tuple[tuple[str | int, ...], Any]] = [
    (("runtime",), "python"),
    (("tool",), "wc"),
    (("source",), "print(1)"),
    (("files",), [{"path": "main.py", "content": "print(1)"}]),
    (("files", 0, "path"), "main.py"),
    (("files", 0, "content"), "print(1)"),
    (("stdin",), ""),
    (("args",), ["-l"]),
    (("args", 0), "-l"),
    (("limits",), {}),
    *[(("limits", name), 1) for name in ("wall_time_s", "cpu_time_s", "memory_mb", "output_kb", "processes")],
    (("tests",), [{"stdin": "", "expected_stdout": "1"}]),
    (("tests", 0, "stdin"), ""),
    (("tests", 0, "expected_stdout"), "1"),
    (("callback_url",), "https://hooks.example.com/h"),  # resolved by the fixture's fake resolver
    (("device",), "laptop-1"),
    (("sandbox",), "auto"),
    (("output_encoding",), "utf-8"),
]


def _put(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """`doc` with the value at `path` replaced (containers on the way created as needed)."""
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(doc) if isinstance(doc, list) and doc else [{}]
        items[0] = _put(items[0], rest, value) if rest else value
        return items
    out = dict(doc) if isinstance(doc, dict) else {}
    out[head] = _put(out.get(head, {}), rest, value) if rest else value
    return out


storable = st.text(st.characters(codec="utf-8"), max_size=40)  # control characters, NUL, emoji: no surrogates
TOOL_ARGS = {
    "sort": [[], ["-n"], ["-t,", "-k2,2n"], ["--parallel=8", "-r"]],
    "wc": [["-l"], []],
    "base64": [["-w", "0"]],
}


@st.composite
def accepted_shapes(draw: st.DrawFn, inject: int = 50) -> Any:
    """A submit body of the right shape whose strings are hostile but storable: what passes the schema must
    still be stored, queued and read back (NULs, control characters, emoji, sizes near the limits)."""
    text = st.one_of(storable, storable, long_text.filter(lambda t: "\ud800" not in t))
    if sometimes(draw, 30):
        tool = draw(st.sampled_from(sorted(TOOL_ARGS)))
        return {"tool": tool, "stdin": draw(text), "args": draw(st.sampled_from(TOOL_ARGS[tool]))}
    doc: dict[str, Any] = {"runtime": draw(st.sampled_from(["python", "bash", "node", "js"])), "stdin": draw(text)}
    if sometimes(draw, 50):
        doc["source"] = draw(text) + "x"
    else:
        path = draw(st.sampled_from(["main.py", "a/b.py", "ǅ.py", "-x", "a" * 255]))
        doc["files"] = [{"path": path, "content": draw(text)}]
    doc["args"] = draw(st.lists(storable.map(lambda a: a.replace("\x00", "")), max_size=5))
    doc["tests"] = draw(st.lists(st.fixed_dictionaries({"stdin": storable, "expected_stdout": storable}), max_size=3))
    if sometimes(draw, inject):  # one string no backend can take, where a string of this job goes
        paths: list[tuple[str | int, ...]] = [("stdin",), ("runtime",)]
        paths += [("source",)] if "source" in doc else [("files", 0, "content"), ("files", 0, "path")]
        paths += [("args", i) for i in range(len(doc["args"]))]
        paths += [("tests", 0, "stdin"), ("tests", 0, "expected_stdout")] if doc["tests"] else []
        value = draw(st.sampled_from(["\ud800", "a\udfffb", "\x00", "x" * 300_000, "-\x00-", "\udc00" * 3000]))
        doc = _put(doc, draw(st.sampled_from(paths)), value)
    return doc


@st.composite
def job_bodies(draw: st.DrawFn) -> Any:
    """A submit body: valid, with hostile strings where strings go, or some fields given hostile values of any
    type."""
    if sometimes(draw, 40):
        return draw(accepted_shapes())
    doc: Any = draw(st.sampled_from([VALID, TOOL]))
    for _ in range(draw(st.integers(0, 3))):
        path, valid = draw(st.sampled_from(FIELDS))
        value = draw(st.one_of(st.just(valid), json_values, st.just([valid] * 30), st.just({"extra": valid})))
        doc = _put(doc, path, value)
    if draw(st.booleans()):
        doc = {**doc, draw(any_text): draw(json_values)}  # an unknown member
    return doc


def _encode(value: Any, draw: st.DrawFn) -> bytes:
    text = json.dumps(value, ensure_ascii=sometimes(draw, 75))  # NaN/Infinity come out as JavaScript does
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate becomes invalid UTF-8


RAW_BODIES = st.one_of(
    st.builds(lambda o, n: (o * n).encode(), st.sampled_from(["[", '{"a":', '[{"a":[', "{"]), st.integers(30, 60_000)),
    st.builds(
        lambda n: ('{"runtime":"python","source":"x","limits":{"memory_mb":1' + "0" * n + "}}").encode(),
        st.integers(30, 6000),
    ),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b'"\\ud800"',
            b"\xef\xbb\xbf{}",
            b"\xff\xfe{\x00}\x00",
            '{"runtime":"python","source":"x"}'.encode("utf-16"),
            b'{"runtime":"python","source":"x","source":"y"}',
            b'{"runtime":"python","source":"x","limits":{"wall_time_s":1e400}}',
            b'{"runtime":"python","source":"x","stdin":"\\u0000\\ud800\\udc00"}',
            b'{"jobs":' + b"[" * 5000,
        ]
    ),
    st.binary(max_size=200),
)


@st.composite
def bodies(draw: st.DrawFn, batch: bool, hostile: bool) -> bytes:
    if not hostile:
        jobs = draw(st.lists(accepted_shapes(inject=0), min_size=1, max_size=3))
        return _encode({"jobs": jobs} if batch else jobs[0], draw)
    if sometimes(draw, 20):
        return draw(RAW_BODIES)
    if batch:
        jobs = draw(st.one_of(st.lists(job_bodies(), max_size=22), json_values))
        return _encode(draw(st.sampled_from([{"jobs": jobs}, jobs, {"jobs": jobs, "x": 1}])), draw)
    return _encode(draw(job_bodies()), draw)


# -- requests ------------------------------------------------------------------------------------------


@dataclass
class Planted:
    """What the test knows of the stack: a real key (the secret no answer may contain), a job, a cursor."""

    key: str
    job_id: str
    cursor: str
    secrets: list[str] = field(default_factory=list)


@st.composite
def credentials(draw: st.DrawFn, key: str, hostile: bool) -> dict[str, str]:
    """The planted key as a well-behaved client sends it (so requests reach the backends), or mangled."""
    if not hostile:
        return draw(st.sampled_from([{"Authorization": f"Bearer {key}"}, {"X-API-Key": key}]))
    mangled = st.one_of(
        st.just(key),
        st.builds(lambda t: key + t, any_text),
        st.builds(lambda t: t + key, any_text),
        st.builds(lambda n: key * n, st.integers(2, 200)),
        st.just(key[:-1]),
        st.just(key.upper()),
    )
    value = draw(st.one_of(mangled, any_text, long_text))
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return {}
    if choice == 1:
        return {"X-API-Key": value}
    scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "Basic ", "", "Bearer\t", "Token "]))
    return {"Authorization": scheme + value}


@st.composite
def extra_headers(draw: st.DrawFn, body: bool, target: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if target == "idempotency":
        headers["Idempotency-Key"] = draw(st.one_of(any_text, long_text, st.text(min_size=1, max_size=255)))
    elif body and sometimes(draw, 20):
        headers["Idempotency-Key"] = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
    if target == "content_type":
        headers["Content-Type"] = draw(
            st.one_of(
                st.sampled_from(["", "text/plain", "application/json; charset=utf-16", "application/octet-stream"]),
                st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "*/*"]),
                any_text,
            )
        )
    elif body:
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "application/json; charset=utf-8"]))
    if target == "headers":
        names = st.text("abcXYZ-_", min_size=1, max_size=8)
        for name, value in draw(st.dictionaries(names, st.one_of(any_text, long_text), max_size=3)).items():
            headers.setdefault(name, value)
    return headers


def _q(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@st.composite
def queries(draw: st.DrawFn, names: list[str], planted: Planted, hostile: bool) -> str:
    if not hostile:
        valid = {
            "wait": "0",
            "limit": draw(st.sampled_from(["1", "5", "100"])),
            "cursor": planted.cursor,
            "device": "laptop-1",
        }
        return "?" + "&".join(f"{name}={valid[name]}" for name in names if name == "device" or sometimes(draw, 50))
    values = {
        # A valid wait would long-poll for real (nothing runs the fuzz's jobs): at most 0.1 s of it.
        "wait": st.one_of(st.sampled_from(["0", "0.1", "20", "21", "-1", "nan", "inf", "1e1", "0x10"]), any_text).map(
            _short_wait
        ),
        "device": st.one_of(st.sampled_from(["laptop-1", "Laptop-1 ", "-x", "a" * 65, ""]), any_text, long_text),
        "limit": st.one_of(st.sampled_from(["1", "100", "101", "0", "1_0", "٣"]), any_text, long_text),
        "cursor": st.one_of(
            st.just(planted.cursor),
            st.builds(lambda t: planted.cursor + t, any_text),
            st.just(planted.cursor[::-1]),
            any_text,
            long_text,
        ),
    }
    params = []
    for name in names:
        for _ in range(draw(st.integers(0, 2))):
            params.append(f"{name}={_q(draw(values[name]))}")
    for _ in range(draw(st.integers(0, 2))):
        params.append(f"{_q(draw(any_text))}={_q(draw(any_text))}")
    return ("?" + "&".join(params)) if params else ""


def _short_wait(raw: str) -> str:
    try:
        long = params.wait({"wait": raw}) > 0.1
    except ValidationFailed:
        long = False
    return "0.1" if long else raw


@st.composite
def delivery_bodies(draw: st.DrawFn, route: str, hostile: bool) -> bytes:
    """Bodies of the delivery routes: an ack ({device, through}) or a default webhook URL ({url})."""
    if route == "ack":
        doc: Any = {"device": "laptop-1", "through": "evt_000000000001"}
        names = ["device", "through"]
    else:
        doc = {"url": draw(st.sampled_from(["https://hooks.example.com/h", None, "https://127.0.0.1/x"]))}
        names = ["url"]
    if hostile:
        if sometimes(draw, 20):
            return draw(RAW_BODIES)
        doc = _put(doc, (draw(st.sampled_from(names)),), draw(st.one_of(json_values, long_text)))
    return _encode(doc, draw)


@st.composite
def job_paths(draw: st.DrawFn, route: str, planted: Planted, hostile_id: bool, hostile_query: bool) -> str:
    ids = [st.just(planted.job_id), st.text("0123456789abcdef", min_size=32, max_size=32)]
    if hostile_id:
        ids = [st.builds(lambda t: _q(t) or "-", st.one_of(any_text, long_text))]
    job_id = draw(st.one_of(*ids))
    query = ""
    if route == "get":
        # The planted job stays queued: a valid wait on it would long-poll for real.
        query = "?wait=0" if job_id == planted.job_id else draw(queries(["wait"], planted, hostile_query))
    return f"/v1/jobs/{job_id}{query}"


TARGETS = ["body"] * 4 + ["path", "query"] * 2 + ["auth", "idempotency", "content_type", "headers", "all"]
ROUTES = {
    "body": ["submit", "submit", "batch", "ack", "webhook"],
    "idempotency": ["submit"],
    "path": ["get", "delete"],
    "query": ["get", "list", "list", "events"],
}
ALL_ROUTES = ["submit", "submit", "batch", "get", "delete", "list", "usage", "queue", "runtimes", "events"]
ALL_ROUTES += ["ack", "webhook", "ws-tickets", "webhook-secret", "webhook-secret/rotate"]


@st.composite
def requests(draw: st.DrawFn, planted: Planted) -> tuple[str, str, dict[str, str], bytes]:
    """(method, path, headers, body): one part of the request hostile and the rest as a good client sends it,
    so each hostile value reaches the code behind the checks before it (or, for `all`, everything at once)."""
    target = draw(st.sampled_from(TARGETS))
    route = draw(st.sampled_from(ROUTES.get(target, ALL_ROUTES)))

    def hostile(part: str) -> bool:
        return target in (part, "all")

    has_body = route in ("submit", "batch", "ack", "webhook")
    headers = {**draw(extra_headers(has_body, target)), **draw(credentials(planted.key, hostile("auth")))}
    if target == "all":
        headers = {
            **draw(extra_headers(has_body, "content_type")),
            **draw(extra_headers(has_body, "headers")),
            **headers,
        }
    if route in ("ack", "webhook"):
        method, path = ("POST", "/v1/events/ack") if route == "ack" else ("PUT", "/v1/webhook")
        return method, path, headers, draw(delivery_bodies(route, hostile("body")))
    if has_body:
        path = "/v1/jobs" + ("/batch" if route == "batch" else "")
        return "POST", path, headers, draw(bodies(route == "batch", hostile("body")))
    if route in ("ws-tickets", "webhook-secret/rotate"):
        return "POST", f"/v1/{route}", headers, b""
    if route == "events":
        return "GET", "/v1/events" + draw(queries(["device", "wait"], planted, hostile("query"))), headers, b""
    if route in ("get", "delete"):
        return route.upper(), draw(job_paths(route, planted, hostile("path"), hostile("query"))), headers, b""
    if route == "list":
        return "GET", "/v1/jobs" + draw(queries(["limit", "cursor"], planted, hostile("query"))), headers, b""
    return "GET", f"/v1/{route}", headers, b""


# -- the property --------------------------------------------------------------------------------------


class Refusals:
    """Every AWS request the backend refused as invalid (any 4xx but a lost conditional write), and every one
    that breaks a documented limit moto does not enforce (so the property does not rest on moto's fidelity)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def after_call(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        code = parsed.get("Error", {}).get("Code", "")
        if 400 <= http_response.status_code < 500 and code != "ConditionalCheckFailedException":
            self.seen.append(f"{model.name}: {code}")

    def before_dynamodb(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        for name in ("Key", "ExclusiveStartKey"):
            for attr, value in (params.get(name) or {}).items():
                if _dynamo_size(value) > 2048:  # a partition key's limit (a sort key's is 1024)
                    self.seen.append(f"{model.name}: key attribute {attr} over 2048 bytes")
        if "Item" in params and sum(len(k) + _dynamo_size(v) for k, v in params["Item"].items()) > 400 * 1024:
            self.seen.append(f"{model.name}: item over 400 KB")
        self._strings(model.name, params)

    def before_sqs(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        for name in ("MessageGroupId", "MessageDeduplicationId"):
            if name in params and not re.fullmatch(r"[!-~]{1,128}", params[name]):
                self.seen.append(f"{model.name}: {name} is not 1-128 printable ASCII")
        if len(params.get("MessageBody", "").encode("utf-8", "surrogatepass")) > 256 * 1024:
            self.seen.append(f"{model.name}: message over 256 KiB")
        self._strings(model.name, params)

    def _strings(self, operation: str, value: Any) -> None:
        """Every string of a request must be UTF-8 (no lone surrogates)."""
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                self.seen.append(f"{operation}: a string that is not UTF-8")
        elif isinstance(value, dict):
            for key, item in value.items():
                self._strings(operation, key)
                self._strings(operation, item)
        elif isinstance(value, list):
            for item in value:
                self._strings(operation, item)


def _dynamo_size(value: dict[str, Any]) -> int:
    """Bytes of a typed DynamoDB value, as DynamoDB counts them (near enough for its limits)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode("utf-8", "surrogatepass"))
    if kind in ("N", "B"):
        return len(inner)
    if kind == "L":
        return 3 + sum(_dynamo_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(len(k) + _dynamo_size(v) for k, v in inner.items())
    if kind in ("SS", "NS", "BS"):
        return sum(len(v) for v in inner)
    return 1


@pytest.fixture
def stack(stack_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Planted, Refusals]]:
    import app as app_module
    from chalicelib.services.ipguard import IpGuard

    monkeypatch.setattr(app_module, "_guard", IpGuard(10**9))  # thousands of requests from one address
    # Callback URLs are resolved at submit: never by real DNS here (tests talk to loopback only).
    monkeypatch.setattr(get_deps().delivery, "resolver", FakeResolver({"hooks.example.com": ["93.184.216.34"]}))
    with Client(app_module.app) as client:
        key = new_key("enterprise", owner="fuzz")
        headers = {"Authorization": f"Bearer {key}"}
        job_id = body(client.http.post("/v1/jobs", headers=headers, body=json.dumps(VALID)))["id"]
        client.http.post("/v1/jobs", headers=headers, body=json.dumps(TOOL))
        cursor = body(client.http.get("/v1/jobs?limit=1", headers=headers))["next_cursor"]
        planted = Planted(key=key, job_id=job_id, cursor=cursor, secrets=[key, hash_key(key)])
        refusals = Refusals()
        clients = [aws_client("dynamodb"), aws_client("sqs")]
        hooks = [
            ("after-call", refusals.after_call),
            ("before-parameter-build.dynamodb", refusals.before_dynamodb),
            ("before-parameter-build.sqs", refusals.before_sqs),
        ]
        for aws in clients:
            for event_name, hook in hooks:
                aws.meta.events.register(event_name, hook)
        yield client, planted, refusals
        for aws in clients:
            for event_name, hook in hooks:
                aws.meta.events.unregister(event_name, hook)


def check(resp: Any, planted: Planted) -> None:
    status, text = resp.status_code, resp.body.decode("utf-8", "replace")
    assert status < 500 or status == 503, (status, text)
    if status == 503:
        assert "Retry-After" in resp.headers, resp.headers
    if status >= 400:
        error = json.loads(text)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), text
    shown = text + json.dumps(resp.headers)
    for secret in planted.secrets:
        assert secret not in shown, f"the planted key (or its hash) is in a {status} answer"


@PROFILE
@given(data=st.data())
def test_hostile_requests_get_the_answers_the_design_promises(
    stack: tuple[Any, Planted, Refusals], data: st.DataObject
) -> None:
    client, planted, refusals = stack
    method, path, headers, raw = data.draw(requests(planted))
    resp = client.http.request(method, path, headers=headers, body=raw)
    event(f"{method} {path.split('?')[0][:12]} -> {resp.status_code}")  # shown by --hypothesis-show-statistics
    check(resp, planted)
    assert refusals.seen == [], refusals.seen
    metrics = get_deps().metrics.totals  # type: ignore[union-attr]
    errors = [name for name in metrics if name.startswith(("BackendRejected", "UnhandledErrors"))]
    assert errors == [], errors
