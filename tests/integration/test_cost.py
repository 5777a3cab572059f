"""`make cost` runs: one trivial job through the platform, counted and priced (the model, not its number)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_cost_model_runs_and_prices_every_line() -> None:
    # Its own process, like `make cost`: it starts its own moto server and imports the app for its own stage.
    done = subprocess.run(
        [sys.executable, "-m", "devtools.cost", "--jobs", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for item in ("API Gateway HTTP API requests", "Lambda requests", "DynamoDB write request units", "SQS FIFO"):
        assert item in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("cost_per_million_usd=") and float(last.split("=", 1)[1]) > 0
