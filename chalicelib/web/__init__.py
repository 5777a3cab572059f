"""Static pages the API serves (the playground at `/`), read from this package so that Chalice ships them.

A page is an HTML file in this folder; its assets (CSS, JS, SVG) live in `static/` and are referenced from the
page as `static/<name>` (relative, so the page also works under API Gateway's `/<stage>/` prefix). When a page
is served, each such reference gets `?v=<content hash>`: the page itself is revalidated on every load, an asset
asked for by its current hash may be cached for good, and a deploy never mixes a new page with an old script.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from chalicelib.domain.errors import NotFound

HERE = Path(__file__).parent
STATIC = HERE / "static"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml; charset=utf-8",
}
# Scripts, styles, images and API calls from this origin only: no inline code, no framing, no form posts.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
REVALIDATE = "no-cache"  # pages, and assets asked for without their current hash
FOREVER = "public, max-age=31536000, immutable"  # an asset asked for by its current hash

_ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:css|js|svg)")
_ASSET_REF = re.compile(r'(?P<attr>src|href)="static/(?P<name>[^"?#]+)"')


@dataclass(frozen=True)
class Reply:
    """An HTTP answer for `app.py` to wrap in a Chalice Response."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def _etag(body: str) -> str:
    return hashlib.sha256(body.encode()).hexdigest()[:20]


def _matches(if_none_match: str | None, etag: str) -> bool:
    tags = {t.strip().removeprefix("W/").strip('"') for t in (if_none_match or "").split(",")}
    return etag in tags or "*" in tags


def _reply(body: str, suffix: str, cache: str, if_none_match: str | None) -> Reply:
    etag = _etag(body)
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": f'"{etag}"'}
    if _matches(if_none_match, etag):
        return Reply(304, "", headers)
    return Reply(200, body, {**headers, "Content-Type": CONTENT_TYPES[suffix]})


def _asset_text(name: str) -> str:
    path = STATIC / name
    if not _ASSET_NAME.fullmatch(name) or not path.is_file():
        raise NotFound(f"no static file named {name!r}")
    return path.read_text(encoding="utf-8")


def asset_version(name: str) -> str:
    """The content hash an asset URL carries (`static/<name>?v=<hash>`)."""
    return _etag(_asset_text(name))


def page_html(name: str) -> str:
    """A page's HTML with every `static/<name>` reference pinned to the asset's current hash."""
    html = (HERE / name).read_text(encoding="utf-8")
    return _ASSET_REF.sub(
        lambda m: f'{m["attr"]}="static/{m["name"]}?v={asset_version(m["name"])}"',
        html,
    )


def serve_page(name: str, if_none_match: str | None, root_path: str | None = None) -> Reply:
    """A page (an HTML file of this folder, named by the route, never by the client).

    `root_path` is the request's full path when the page is the API's root: API Gateway answers `/<stage>`
    and `/<stage>/` alike, and the page's relative links need the slash, so the first is redirected.
    """
    if root_path and not root_path.endswith("/"):
        return Reply(308, "", {"Location": root_path + "/", "Cache-Control": REVALIDATE})
    return _reply(page_html(name), ".html", REVALIDATE, if_none_match)


def serve_asset(name: str, version: str | None, if_none_match: str | None) -> Reply:
    """An asset of `static/`; NotFound for any other name (no paths, no dot files, no other types)."""
    body = _asset_text(name)
    cache = FOREVER if version == _etag(body) else REVALIDATE
    return _reply(body, Path(name).suffix, cache, if_none_match)
