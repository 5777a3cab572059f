"""How good is `estimated_wait_s`? Real waits against the estimates given at submit, on the local stack.

    python -m tests.bench_estimates [--run-s 2]      (also part of `make bench`: "estimated_wait")

Two scenarios, each a burst of identical jobs (`time.sleep(run_s)`) submitted at once on a fresh stack, after
one warm-up job so that run-time statistics exist (the tier's and the first key's):
- one_key: one free key submits 6 jobs: its cap of 2 makes three waves (the key bound);
- tier: 6 free keys submit 2 jobs each: the tier's 4 workers make three waves (the tier bound).
The real wait of a job is its `queue_wait_ms` (created -> started). The error is real minus estimated; the
README states the tolerance (`tolerance_s`): 1.5 s, or half the real wait when that is longer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.e2e.stackproc import Api, StackProcess, start_stack

TOLERANCE_S = 1.5
TOLERANCE_FRACTION = 0.5


def job(run_s: float) -> dict[str, Any]:
    return {"runtime": "python", "source": f"import time; time.sleep({run_s})", "limits": {"wall_time_s": run_s + 5}}


def _burst(users: list[Api], per_user: int, run_s: float) -> list[dict[str, Any]]:
    """Each user submits `per_user` jobs (in order, users in parallel); then wait for all; the samples."""

    def submit_all(user: Api) -> list[tuple[Api, dict[str, Any]]]:
        out = []
        for _ in range(per_user):
            resp = user.submit(job(run_s))
            assert resp.status == 202, (resp.status, resp.body)
            out.append((user, resp.body))
        return out

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        accepted = [item for batch in pool.map(submit_all, users) for item in batch]
    samples = []
    for user, body in accepted:
        done = user.wait(body["id"], timeout=120)
        assert done["status"] == "succeeded", done
        samples.append(
            {
                "position": body["position"],
                "estimated_s": body["estimated_wait_s"],
                "waited_s": round(done["queue_wait_ms"] / 1000, 2),
                "ran_s": round(done["result"]["wall_ms"] / 1000, 2),
            }
        )
    return samples


def tolerance_s(waited_s: float) -> float:
    """The stated tolerance (README): within 1.5 s, or within half the real wait when that is longer."""
    return max(TOLERANCE_S, TOLERANCE_FRACTION * waited_s)


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [(s["waited_s"] - s["estimated_s"], s["waited_s"]) for s in samples]
    return {
        "jobs": len(samples),
        "mean_abs_error_s": round(statistics.fmean(abs(e) for e, _ in errors), 2),
        "max_abs_error_s": round(max(abs(e) for e, _ in errors), 2),
        "mean_error_s": round(statistics.fmean(e for e, _ in errors), 2),
        "within_tolerance": sum(1 for e, waited in errors if abs(e) <= tolerance_s(waited)),
        "samples": samples,
    }


def estimate_accuracy(run_s: float = 2.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="coderunner-bench-estimates-") as scratch:
        stack: StackProcess = start_stack(Path(scratch))
        try:
            # The worker probes its sandbox layers on its first run: pay that on another tier (other statistics).
            probe = stack.api(stack.keys["pro"])
            assert probe.wait(probe.submit_ok({"runtime": "python", "source": "print(1)"}), timeout=60)["result"]
            first = stack.api(stack.keys["free"])
            assert first.wait(first.submit_ok(job(run_s)), timeout=60)["status"] == "succeeded"  # the statistics
            one_key = _burst([first], 6, run_s)
            tier = _burst([stack.api(stack.make_key("free")) for _ in range(6)], 2, run_s)
        finally:
            stack.stop()
    return {
        "run_s": run_s,
        "one_key": summary(one_key),
        "tier": summary(tier),
        "note": "error = real wait (queue_wait_ms) - estimated_wait_s at submit; tolerance: "
        f"{TOLERANCE_S} s or {TOLERANCE_FRACTION:.0%} of the real wait, whichever is larger",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-s", type=float, default=2.0)
    args = parser.parse_args(argv)
    figures = estimate_accuracy(args.run_s)
    print(json.dumps(figures, indent=2), flush=True)
    ok = all(figures[s]["within_tolerance"] == figures[s]["jobs"] for s in ("one_key", "tier"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
