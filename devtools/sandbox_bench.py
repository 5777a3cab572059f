"""`make bench`: the local sandbox's overhead on `print(1)` against the bare interpreter, as JSON.

Three ways to run `print(1)` are interleaved, so that each sees the same machine: the bare interpreter
(`python3 -B main.py` in a subprocess), the sandbox with every layer as the worker runs it (a pool of
prepared sandboxes, `CODERUNNER_SANDBOX_POOL_SIZE`), and the sandbox started from nothing (no pool: the path a
job takes when no prepared sandbox is ready).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

from chalicelib.config import Settings
from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest, SandboxLimits, SourceFile
from chalicelib.sandbox.runner import execute
from chalicelib.sandbox.runtimes import _system_python

RUNS = 30
_LIMITS = SandboxLimits(wall_time_s=5, cpu_time_s=5, memory_mb=256, output_kb=64, processes=32)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def measure(runs: int = RUNS, pool_size: int | None = None) -> dict[str, Any]:
    """Median wall time of `print(1)` bare, in a prepared sandbox and in a sandbox started from nothing."""
    size = Settings().sandbox_pool_size if pool_size is None else pool_size
    pooled = Isolation(IsolationSettings(pool_size=max(size, 1)))
    direct = Isolation(IsolationSettings())
    request = ExecutionRequest(
        job_id="bench",
        runtime="python3",
        files=[SourceFile(path="main.py", content="print(1)\n")],
        limits=_LIMITS,
    )
    for iso in (pooled, direct):  # the first run probes the layers and builds the seccomp filter
        execute(request, isolation=iso)
    assert pooled.pool is not None
    pooled.pool.wait_filled(30)
    served_before = pooled.pool.stats["served"]
    samples: dict[str, list[float]] = {"bare": [], "pooled": [], "direct": []}
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "main.py")
        with open(script, "w") as handle:
            handle.write("print(1)\n")
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([_system_python(), "-B", script], capture_output=True, check=True)
            samples["bare"].append(time.perf_counter() - started)
            for name, iso in (("pooled", pooled), ("direct", direct)):
                started = time.perf_counter()
                result = execute(request, isolation=iso)
                samples[name].append(time.perf_counter() - started)
                assert result.stdout == "1\n", result
    served = pooled.pool.stats["served"] - served_before
    pooled.pool.drain()
    bare, warm, cold = (_median_ms(samples[name]) for name in ("bare", "pooled", "direct"))
    return {
        "runs": runs,
        "bare_median_ms": bare,
        "sandboxed_median_ms": warm,
        "ratio": round(warm / bare, 2),
        "overhead_median_ms": round(warm - bare, 1),
        "pool_size": max(size, 1),
        "runs_served_by_the_pool": served,
        "started_from_nothing_median_ms": cold,
        "started_from_nothing_ratio": round(cold / bare, 2),
        "layers": pooled.layers(),
        "note": "medians of interleaved runs; sandboxed = a prepared sandbox (as the worker runs jobs), "
        "started_from_nothing = no pool (every layer set up on the job's path)",
    }


def main() -> dict[str, Any]:
    """Print and return the figures."""
    figures = measure()
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
