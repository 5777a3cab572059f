"""schemathesis hooks for `make fuzz` (loaded through SCHEMATHESIS_HOOKS by tests/e2e/fuzz.py)."""

from __future__ import annotations

from typing import Any

import schemathesis

WAIT_CAP_S = 0.5  # a long-poll on a real job may wait this long at most: the run is about answers


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict[str, Any]) -> None:
    """Cap a numeric `?wait` (an invalid one is left alone: its 422 is part of the test)."""
    params = kwargs.get("params")
    if not isinstance(params, dict) or "wait" not in params:
        return
    try:
        wait = float(params["wait"])
    except (TypeError, ValueError):
        return
    if wait > WAIT_CAP_S and wait <= 20:
        params["wait"] = WAIT_CAP_S
