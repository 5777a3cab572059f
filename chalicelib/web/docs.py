"""`GET /docs`: the OpenAPI document as one plain HTML page (no script, no CDN), generated on the server.

Each operation shows its parameters, request body and every response with its headers; each schema is a
table of its fields. Everything from the document is HTML-escaped.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

REF_PREFIX = "#/components/schemas/"
_CONSTRAINTS = (
    ("minLength", "min length"),
    ("maxLength", "max length"),
    ("minimum", "≥"),
    ("exclusiveMinimum", ">"),
    ("maximum", "≤"),
    ("exclusiveMaximum", "<"),
    ("minItems", "min items"),
    ("maxItems", "max items"),
    ("pattern", "pattern"),
    ("default", "default"),
)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _text(value: Any) -> str:
    """Prose from the document: escaped, with `code` spans (the document's descriptions use them) as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(value))


def _anchor(name: str) -> str:
    return "schema-" + "".join(c if c.isalnum() else "-" for c in name)


def type_html(schema: dict[str, Any]) -> str:
    """A schema's type in a few words, with links to named schemas."""
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix(REF_PREFIX)
        return f'<a href="#{_anchor(name)}">{_e(name)}</a>'
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return " | ".join(type_html(part) for part in schema[combinator])
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(json.dumps(v))}</code>" for v in schema["enum"])
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {type_html(schema.get('items', {}))}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {type_html(schema['additionalProperties'])}"
    return _e(kind)


def _notes(schema: dict[str, Any]) -> str:
    parts = [_text(schema["description"])] if schema.get("description") else []
    for key, label in _CONSTRAINTS:
        if key in schema:
            parts.append(f"{_e(label)} <code>{_e(json.dumps(schema[key]))}</code>")
    return "; ".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{''.join(f'<th>{_e(h)}</th>' for h in head)}</tr></thead><tbody>{cells}</tbody></table>"


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    required = set(schema.get("required", []))
    rows = [
        [f"<code>{_e(field)}</code>", type_html(sub), "yes" if field in required else "", _notes(sub)]
        for field, sub in schema.get("properties", {}).items()
    ]
    body = _table(["field", "type", "required", "notes"], rows) or f"<p>{type_html(schema)}</p>"
    doc = f"<p>{_text(schema['description'])}</p>" if schema.get("description") else ""
    return f'<section class="schema" id="{_anchor(name)}"><h3>{_e(name)}</h3>{doc}{body}</section>'


def _media_type(content: dict[str, Any]) -> str:
    return "<br>".join(
        f"<code>{_e(kind)}</code> {type_html(media.get('schema', {}))}" for kind, media in content.items()
    )


def _responses(responses: dict[str, Any]) -> str:
    rows = []
    for status, answer in responses.items():
        headers = ", ".join(
            f"<code>{_e(h)}</code>{'' if spec.get('required') else ' (sometimes)'}"
            for h, spec in answer.get("headers", {}).items()
        )
        rows.append(
            [
                f"<b>{_e(status)}</b>",
                _text(answer.get("description", "")),
                _media_type(answer.get("content", {})),
                headers,
            ]
        )
    return _table(["status", "meaning", "body", "headers"], rows)


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    anchor = op.get("operationId", f"{method}-{path}")
    auth = "API key" if op.get("security") else "no key needed"
    parts = [
        f'<section class="operation" id="op-{_e(anchor)}">',
        f'<h3><span class="method method-{_e(method)}">{_e(method.upper())}</span> <code>{_e(path)}</code></h3>',
        f"<p><b>{_e(op.get('summary', ''))}</b> · {auth}</p>",
    ]
    if op.get("description"):
        parts.append(f"<p>{_text(op['description'])}</p>")
    params = [
        [
            f"<code>{_e(p['name'])}</code>",
            _e(p["in"]),
            "yes" if p.get("required") else "",
            type_html(p["schema"]),
            _notes({**p["schema"], "description": p.get("description", "")}),
        ]
        for p in op.get("parameters", [])
    ]
    if params:
        parts.append("<h4>Parameters</h4>" + _table(["name", "in", "required", "type", "notes"], params))
    body = op.get("requestBody")
    if body:
        parts.append(f"<h4>Request body</h4><p>{_media_type(body['content'])}</p>")
        for media in body["content"].values():
            if "example" in media:
                parts.append(f"<pre>{_e(json.dumps(media['example'], indent=2))}</pre>")
    parts.append("<h4>Responses</h4>" + _responses(op.get("responses", {})) + "</section>")
    return "".join(parts)


def render(document: dict[str, Any]) -> str:
    """The whole page."""
    info = document.get("info", {})
    title = f"{info.get('title', 'API')} API {info.get('version', '')}".strip()
    index, sections = [], []
    for path, methods in document.get("paths", {}).items():
        for method, op in methods.items():
            anchor = op.get("operationId", f"{method}-{path}")
            index.append(
                f'<li><a href="#op-{_e(anchor)}"><code>{_e(method.upper())} {_e(path)}</code></a> '
                f"{_e(op.get('summary', ''))}</li>"
            )
            sections.append(_operation(method, path, op))
    schemas = document.get("components", {}).get("schemas", {})
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{_e(title)}</title><link rel="icon" href="static/icon.svg">'
        '<link rel="stylesheet" href="static/docs.css"></head><body>'
        f"<header><h1>{_e(title)}</h1><p>{_e(info.get('summary', ''))}</p><p>{_text(info.get('description', ''))}</p>"
        '<p>The same document as JSON: <a href="v1/openapi.json"><code>/v1/openapi.json</code></a> '
        '(OpenAPI 3.1). Try it in the <a href="./">playground</a>.</p></header>'
        f"<nav><h2>Contents</h2><ul>{''.join(index)}</ul></nav>"
        f"<main><h2>Operations</h2>{''.join(sections)}"
        f"<h2>Schemas</h2>{''.join(_schema_section(n, s) for n, s in schemas.items())}</main>"
        "</body></html>"
    )
