"""The playground's static files through chalice.test.Client: types, security and cache headers, no key."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chalice.test import Client

from chalicelib import web
from tests.integration.helpers import body

WEB = Path(web.__file__).parent
TEXT_FILES = sorted(p for p in WEB.rglob("*") if p.suffix in (".html", ".css", ".js", ".svg"))
# The one URL a shipped file may contain: the SVG namespace, an identifier that is never fetched.
NAMESPACES = {"http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def client(moto_endpoint: str) -> Iterator[Any]:
    """One app for the module: these routes read only the package, never a table (AWS points at moto anyway)."""
    from app import app

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        with Client(app) as c:
            yield c


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(static/[^"]+)"', html)


def assert_secured(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"


def test_the_page_is_html_with_a_strict_policy_and_needs_no_key(client: Any) -> None:
    resp = client.http.get("/")  # no Authorization header
    assert resp.status_code == 200, resp.body
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-cache" and resp.headers["ETag"]
    assert_secured(resp.headers)
    html = resp.body.decode()
    assert "<title>code-runner playground</title>" in html
    assert {u.split("?")[0] for u in asset_urls(html)} == {
        "static/icon.svg",
        "static/playground.css",
        "static/playground.js",
    }


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("playground.js", "text/javascript; charset=utf-8"),
        ("playground.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml; charset=utf-8"),
    ],
)
def test_assets_have_their_type_and_are_cached_for_good_only_by_their_hash(
    client: Any, name: str, content_type: str
) -> None:
    pinned = next(u for u in asset_urls(client.http.get("/").body.decode()) if u.startswith(f"static/{name}?v="))
    resp = client.http.get("/" + pinned)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == content_type
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert_secured(resp.headers)
    assert resp.body.decode() == (WEB / "static" / name).read_text()  # text, not base64 (not a binary type)
    for unpinned in (f"/static/{name}", f"/static/{name}?v=stale"):
        assert client.http.get(unpinned).headers["Cache-Control"] == "no-cache"


def test_a_known_etag_gets_a_304_without_a_body(client: Any) -> None:
    first = client.http.get("/")
    again = client.http.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.body == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    changed = client.http.get("/", headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200 and changed.body == first.body


@pytest.mark.parametrize(
    "name", ["__init__.py", "playground.html", ".hidden.js", "..%2F__init__.py", "nope.js", "PLAYGROUND.JS"]
)
def test_only_the_shipped_assets_are_served(client: Any, name: str) -> None:
    resp = client.http.get(f"/static/{name}")
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "application/json" and body(resp)["error"]["code"] == "not_found"


def test_the_root_page_behind_a_stage_prefix_gets_its_trailing_slash() -> None:
    """API Gateway serves `/api` and `/api/` alike; the page's relative links only work from the second."""
    redirect = web.serve_page("playground.html", None, root_path="/api")
    assert redirect.status == 308 and redirect.headers["Location"] == "/api/"
    assert web.serve_page("playground.html", None, root_path="/api/").status == 200
    assert web.serve_page("playground.html", None, root_path="/").status == 200


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.name)
def test_shipped_files_reference_no_other_origin(path: Path) -> None:
    urls = set(re.findall(r"https?://[^\s\"'<>)]+|(?<=[\"'(=])//[^\s\"'<>)]+", path.read_text()))
    assert urls <= NAMESPACES, f"{path.name} references another origin: {sorted(urls - NAMESPACES)}"


def test_the_page_has_no_inline_code_and_never_parses_output_as_html() -> None:
    html = (WEB / "playground.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler"
    assert not re.search(r"\sstyle\s*=", html), "inline style attribute"
    js = (WEB / "static" / "playground.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in js, sink
    assert "localStorage" in js and "?key=" not in js and "api_key=" not in js  # the key never goes in a URL
