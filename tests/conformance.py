"""Does an HTTP answer keep the OpenAPI document's promises? Shared by the OpenAPI tests and `make fuzz`.

An answer conforms when its status is documented for its route, every header the document marks required
is there, and a JSON body validates against the documented schema.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

import jsonschema


@functools.cache
def _patterns(paths: tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    # Concrete paths before templated ones (`/v1/jobs/batch` before `/v1/jobs/{job_id}`), as API Gateway does.
    ordered = sorted(paths, key=lambda p: (p.count("{"), p))
    return [(re.compile(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(p)) + "$"), p) for p in ordered]


def route_of(document: dict[str, Any], path: str) -> str | None:
    """The documented path a concrete one matches (`/v1/jobs/abc` -> `/v1/jobs/{job_id}`), or None."""
    bare = path.split("?")[0]
    if bare != "/" and bare.endswith("/"):
        bare = bare[:-1]
    for pattern, documented in _patterns(tuple(document["paths"])):
        if pattern.match(bare):
            return documented
    return None


def documented_answer(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any] | None:
    """The document's response object for this answer, or None when the status is not documented."""
    route = route_of(document, path)
    operation = document["paths"].get(route or "", {}).get(method.lower())
    if operation is None:
        return None
    answer = operation["responses"].get(str(status))
    return dict(answer) if answer is not None else None


def problems(
    document: dict[str, Any], method: str, path: str, status: int, headers: Mapping[str, str], body: bytes | str
) -> list[str]:
    """Why this answer breaks the document (empty when it conforms)."""
    where = f"{method.upper()} {path.split('?')[0]} -> {status}"
    answer = documented_answer(document, method, path, status)
    if answer is None:
        return [f"{where}: status not documented"]
    lower = {k.lower(): v for k, v in headers.items()}
    found = [
        f"{where}: required header {name} missing"
        for name, spec in answer.get("headers", {}).items()
        if spec.get("required") and name.lower() not in lower
    ]
    media = answer.get("content", {}).get("application/json")
    if media is not None and "$ref" in media.get("schema", {}):
        try:
            data = json.loads(body)
        except ValueError:
            return [*found, f"{where}: body is not JSON"]
        schema = {**media["schema"], "components": document["components"]}
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=str)
        found += [f"{where}: {e.json_path}: {e.message[:200]}" for e in errors]
    return found
