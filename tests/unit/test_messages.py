"""What the API tells users to do is something it accepts: no message or doc suggests a long-poll longer than
the maximum `wait` (a refusal once said `?wait=30`, which is a 422)."""

from __future__ import annotations

import re
from pathlib import Path

from chalicelib.services.queries import MAX_WAIT_S

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "app.py", ROOT / "README.md", *sorted((ROOT / "chalicelib").rglob("*.py"))]


def test_no_message_suggests_a_wait_above_the_maximum() -> None:
    found = [
        (path.name, int(value))
        for path in SHIPPED
        for value in re.findall(r"[?&]wait=(\d+)", path.read_text(encoding="utf-8"))
    ]
    assert found, "the check must see the suggestions it is about"
    assert [f for f in found if f[1] > MAX_WAIT_S] == []
