"""`make bench`: the local sandbox's overhead on `print(1)` against the bare interpreter, as JSON."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

from chalicelib.sandbox.local import probe_layers
from chalicelib.sandbox.models import ExecutionRequest, SandboxLimits, SourceFile
from chalicelib.sandbox.runner import execute
from chalicelib.sandbox.runtimes import _system_python

RUNS = 30
_LIMITS = SandboxLimits(wall_time_s=5, cpu_time_s=5, memory_mb=256, output_kb=64, processes=32)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 1)


def measure(runs: int = RUNS) -> dict[str, Any]:
    """Median wall time of `print(1)` run bare and through `execute`, interleaved in the same run."""
    request = ExecutionRequest(
        job_id="bench",
        runtime="python3",
        files=[SourceFile(path="main.py", content="print(1)\n")],
        limits=_LIMITS,
    )
    execute(request)  # first use probes the layers and builds the seccomp filter: not part of a run
    bare: list[float] = []
    sandboxed: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        script = os.path.join(scratch, "main.py")
        with open(script, "w") as handle:
            handle.write("print(1)\n")
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([_system_python(), "-B", script], capture_output=True, check=True)
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = execute(request)
            sandboxed.append(time.perf_counter() - started)
            assert result.stdout == "1\n", result
    return {
        "runs": runs,
        "bare_median_ms": _median_ms(bare),
        "sandboxed_median_ms": _median_ms(sandboxed),
        "overhead_median_ms": round(_median_ms(sandboxed) - _median_ms(bare), 1),
        "layers": probe_layers(),
    }


def main() -> dict[str, Any]:
    """Print and return the figures."""
    figures = measure()
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
