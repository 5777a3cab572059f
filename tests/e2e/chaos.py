"""`make chaos`: a stream of jobs across tiers and keys while worker processes are SIGKILLed at random.

    python -m tests.e2e.chaos --jobs 200 [--kills 8] [--seed 1] [--timeout 300]

The stack runs two worker processes; its supervisor restarts a killed one. A job whose worker died mid-run
stays `running` until its lease (wall time + grace) expires; the reaper then retries it. At the end, with
every job terminal or the timeout spent, the platform's own records are checked:

- terminal: accepted jobs in a terminal state; lost: accepted jobs that are not.
- duplicate_runs: runs the user cannot account for. The worker logs "job attempt pid" before every run
  (CODERUNNER_RUN_LOG). Each attempt of a job may run at most once (its start is a conditional write on
  the attempt number), and never more runs than the job's `attempts`: so per job,
  sum over attempts of (runs - 1) for attempts run twice or more, plus runs of attempts the job never had.
- leaked_slots: slot holders left in the counters table (`slots#KEY`), plus `running` left on `tier#T`.
It also checks (on stderr, and in the exit status): each key's quota used today equals its jobs not
refunded; a finished job's last attempt ran exactly once; the sandboxes of killed workers are gone; every
job succeeded (each is written to, so another outcome is a platform fault the user sees).
Warnings only (stderr): sandbox processes that outlived their killed worker, job cgroups left behind.
Prints exactly one line on stdout: `chaos: jobs=N terminal=N duplicate_runs=0 leaked_slots=0 lost=0`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.e2e.stackproc import StackProcess, descendants, start_stack

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "error"}
CHAOS_SETTINGS = {
    "CODERUNNER_REAP_EVERY_S": "1",
    # Short, so a killed run is retried soon; not so short that a live run on a loaded machine (its start to its
    # end: the sandbox prepared, run, result written) outlasts it and is retried as lost.
    "CODERUNNER_LEASE_GRACE_S": "10",
    # A killed worker's message blocks its FIFO group until it is visible again.
    "CODERUNNER_VISIBILITY_TIMEOUT": "6",
}
TIER_SHARE = (("free", 0.2, 8), ("pro", 0.3, 50), ("enterprise", 0.5, 400))  # tier, share, jobs per key


def job_body(rng: random.Random) -> dict[str, Any]:
    """A short job: most print at once, some sleep 0.2-1 s."""
    limits = {"wall_time_s": 3}
    pause = round(rng.uniform(0.2, 1.0), 2)
    return rng.choice(
        [
            {"runtime": "python", "source": "print(input()[::-1])", "stdin": "chaos", "limits": limits},
            {"runtime": "bash", "source": "echo chaos", "limits": limits},
            {"runtime": "python", "source": f"import time; time.sleep({pause}); print(1)", "limits": limits},
            {"runtime": "bash", "source": f"sleep {pause}; echo done", "limits": limits},
        ]
    )


@dataclass
class Kill:
    at: float
    pid: int
    mid_run: bool  # the worker had a sandbox running
    sandbox: list[tuple[int, str]]  # (pid, start time) of its sandbox processes, to check they go away
    outlived: int = 0  # of those, still alive a second after the kill


@dataclass
class Report:
    jobs: int = 0
    accepted: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    terminal: int = 0
    duplicate_runs: int = 0
    leaked_slots: int = 0
    lost: int = 0
    quota_mismatch: int = 0
    unrun_finishes: int = 0
    lingering: int = 0
    leaked_cgroups: int = 0
    unexpected: list[str] = field(default_factory=list)  # jobs that did not succeed (all of them should)
    leaks: list[str] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    attempts: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"chaos: jobs={self.jobs} terminal={self.terminal} duplicate_runs={self.duplicate_runs} "
            f"leaked_slots={self.leaked_slots} lost={self.lost}"
        )

    def failures(self) -> dict[str, int]:
        checks = {
            "duplicate_runs": self.duplicate_runs,
            "leaked_slots": self.leaked_slots,
            "lost": self.lost,
            "quota_mismatch": self.quota_mismatch,
            "unrun_finishes": self.unrun_finishes,
            "lingering_sandbox_processes": self.lingering,
            "did_not_succeed": len(self.unexpected),  # every chaos job is written to succeed
            "not_accepted": self.jobs - len(self.accepted),
        }
        return {name: n for name, n in checks.items() if n}

    def details(self) -> str:
        mid = sum(k.mid_run for k in self.kills)
        outlived = sum(k.outlived for k in self.kills)
        return (
            f"chaos: {self.seconds:.1f} s; accepted={len(self.accepted)} rejected={dict(self.rejected)}; "
            f"kills={len(self.kills)} (mid-run {mid}); statuses={dict(self.statuses)}; "
            f"attempts={dict(sorted(self.attempts.items()))}; quota_mismatch={self.quota_mismatch} "
            f"unrun_finishes={self.unrun_finishes} lingering={self.lingering}; "
            f"warnings: sandbox processes alive 1 s after their worker was killed={outlived}, "
            f"cgroups left by this run={self.leaked_cgroups}"
            + (f"; leaks={self.leaks}" if self.leaks else "")
            + (f"; did not succeed: {self.unexpected}" if self.unexpected else "")
        )


# -- the load -----------------------------------------------------------------------------------------------
def make_users(stack: StackProcess, n_jobs: int, rng: random.Random) -> list[str]:
    """One key per job to submit, spread over enough keys per tier to stay inside the per-minute quotas."""
    plan: list[str] = []
    for tier, share, per_key in TIER_SHARE:
        count = round(n_jobs * share) if tier != "enterprise" else n_jobs - len(plan)
        keys = [stack.make_key(tier) for _ in range(max(1, math.ceil(count / per_key)))]
        plan += [keys[i % len(keys)] for i in range(count)]
    rng.shuffle(plan)
    return plan


def submit_all(stack: StackProcess, plan: list[str], rng: random.Random, report: Report) -> None:
    bodies = [job_body(rng) for _ in plan]
    lock = threading.Lock()

    def one(i: int) -> None:
        api = stack.api(plan[i])
        for _ in range(20):
            resp = api.submit(bodies[i])
            with lock:
                if resp.status == 202:
                    report.accepted.append(resp.body["id"])
                    return
                report.rejected[f"{resp.status}:{resp.error_code}"] += 1
            if resp.status not in (429, 503):
                return
            time.sleep(min(5.0, float(resp.headers.get("retry-after", "1"))))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(len(plan))))


# -- the chaos ----------------------------------------------------------------------------------------------
def _start_time(pid: int) -> str:
    """The process's start time, or "" once it is gone. A zombie counts as gone: it runs nothing and holds
    nothing but its pid until init reaps it (the killed worker cannot)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "" if len(fields) < 20 or fields[0] == "Z" else fields[19]


def _is_sandbox(pid: int) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as fh:
        return b"supervisor.py" in fh.read()
    return False


def _busy_workers(stack: StackProcess) -> list[int]:
    return [pid for pid in stack.worker_pids() if any(_is_sandbox(p) for p in descendants(pid))]


def _victim(stack: StackProcess, rng: random.Random) -> int | None:
    """Half the time a worker with a sandbox running (a kill mid-run, waited for up to 2 s), else any."""
    if rng.random() < 0.5:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            busy = _busy_workers(stack)
            if busy:
                return rng.choice(busy)
            time.sleep(0.02)
    workers = stack.worker_pids()
    return rng.choice(workers) if workers else None


def kill_one(stack: StackProcess, rng: random.Random) -> Kill | None:
    pid = _victim(stack, rng)
    if pid is None:
        return None
    # The whole tree: the supervisors the worker started put themselves (and their jobs) in new sessions.
    sandbox = [(p, _start_time(p)) for p in descendants(pid)]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
        return Kill(time.monotonic(), pid, any(_is_sandbox(p) for p, _ in sandbox), sandbox)
    return None


def killer(stack: StackProcess, kills: int, window_s: float, rng: random.Random, report: Report) -> None:
    """SIGKILL `kills` workers at random moments of the `window_s` seconds after the first run starts."""
    while not stack.run_log.exists():
        time.sleep(0.05)
    started = time.monotonic()
    for moment in sorted(rng.uniform(0, window_s) for _ in range(kills)):
        time.sleep(max(0.0, started + moment - time.monotonic()))
        for _ in range(50):  # right after a kill the supervisor may not have restarted the worker yet
            kill = kill_one(stack, rng)
            if kill is not None:
                report.kills.append(kill)
                time.sleep(1)
                kill.outlived = sum(1 for pid, started in kill.sandbox if started and _start_time(pid) == started)
                break
            time.sleep(0.1)


# -- the checks ---------------------------------------------------------------------------------------------
def wait_terminal(stack: StackProcess, accepted: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """The job records once every accepted job is terminal (or at the timeout)."""
    wanted, deadline = set(accepted), time.monotonic() + timeout_s
    while True:
        jobs = {j["id"]: j for j in stack.scan("jobs") if j["id"] in wanted}
        if all(jobs.get(i, {}).get("status") in TERMINAL for i in wanted) or time.monotonic() > deadline:
            return jobs
        time.sleep(0.25)  # a scan of the jobs table: cheap next to a second of idle waiting per check


def runs_by_job(run_log: Path) -> dict[str, Counter[int]]:
    runs: dict[str, Counter[int]] = defaultdict(Counter)
    with contextlib.suppress(FileNotFoundError):
        for line in run_log.read_text().splitlines():
            job_id, attempt, _pid = line.split()
            runs[job_id][int(attempt)] += 1
    return runs


def duplicate_runs(job: dict[str, Any], runs: Counter[int]) -> int:
    """Runs of one job beyond one per attempt, and runs of attempts the job does not have."""
    attempts = int(job.get("attempts", 0))
    twice = sum(n - 1 for a, n in runs.items() if 1 <= a <= attempts and n > 1)
    return twice + sum(n for a, n in runs.items() if not 1 <= a <= attempts)


def leaked_slots(stack: StackProcess) -> list[str]:
    """Slot holders still registered, and tiers still counting running jobs (one entry per unit)."""
    leaked = []
    for item in stack.scan("counters"):
        if item["pk"].startswith("slots#"):
            leaked += [f"{item['pk']}:{holder}" for holder in sorted(item.get("holders") or ())]
        elif item["pk"].startswith("tier#"):
            leaked += [f"{item['pk']}:running={item.get('running', 0)}"] * abs(int(item.get("running", 0)))
    return leaked


def quota_mismatch(stack: StackProcess, jobs: dict[str, dict[str, Any]]) -> int:
    """Per key: today's used quota against today's jobs that were charged and not refunded."""
    charged: Counter[str] = Counter()
    for job in jobs.values():
        if not job.get("refunded"):
            charged[f"{job['key_hash']}@{job.get('charged_day')}"] += 1
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    mismatch = 0
    for key in stack.scan("keys"):
        if key.get("d_win") == today:
            mismatch += abs(int(key.get("d_n", 0)) - charged[f"{key['key_hash']}@{today}"])
    return mismatch


def lingering(kills: list[Kill]) -> int:
    """Processes of killed workers' trees still alive now (same pid and start time)."""
    return sum(1 for kill in kills for pid, started in kill.sandbox if started and _start_time(pid) == started)


def leaked_cgroups(job_ids: list[str], root: str = "/sys/fs/cgroup") -> int:
    """Job cgroups (named by slot, v1 memory and pids controllers) that still hold processes once the stack
    is stopped. An empty one a killed worker left is replaced by the next run in its slot, so is not a leak."""
    found = 0
    for controller in ("memory", "pids"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(f"{root}/{controller}/code-runner"):
                if entry.is_dir() and entry.name.startswith("slot-"):
                    with contextlib.suppress(OSError), open(os.path.join(entry.path, "cgroup.procs")) as fh:
                        found += bool(fh.read().strip())
    return found


def _summary(job: dict[str, Any]) -> str:
    result = json.loads(job["result"]) if isinstance(job.get("result"), str) else job.get("result") or {}
    return (
        f"{job['id']} {job.get('status')} attempts={job.get('attempts')} error={job.get('error')!r} "
        f"reason={result.get('reason')} exit={result.get('exit_code')} signal={result.get('signal')} "
        f"wall_ms={result.get('wall_ms')} stderr={str(result.get('stderr', ''))[:300]!r}"
    )


def check(stack: StackProcess, report: Report, timeout_s: float) -> None:
    jobs = wait_terminal(stack, report.accepted, timeout_s)
    report.statuses = Counter(str(j.get("status")) for j in jobs.values())
    report.attempts = Counter(int(j.get("attempts", 0)) for j in jobs.values())
    report.terminal = sum(1 for j in jobs.values() if j.get("status") in TERMINAL)
    report.unexpected = [_summary(j) for j in jobs.values() if j.get("status") != "succeeded"]
    report.lost = len(report.accepted) - report.terminal
    runs = runs_by_job(stack.run_log)
    report.duplicate_runs = sum(duplicate_runs(job, runs.get(job_id, Counter())) for job_id, job in jobs.items())
    report.unrun_finishes = sum(
        1
        for job_id, job in jobs.items()
        if job.get("status") in ("succeeded", "failed", "timed_out") and runs[job_id][int(job["attempts"])] != 1
    )
    settle = time.monotonic() + 15  # the last finishes release their slots just after the terminal write
    while (leaked := leaked_slots(stack)) and time.monotonic() < settle:
        time.sleep(0.1)
    report.leaked_slots = len(leaked)
    report.leaks = leaked
    report.quota_mismatch = quota_mismatch(stack, jobs)
    report.lingering = lingering(report.kills)


def run_chaos(
    n_jobs: int, kills: int, seed: int, timeout_s: float, workdir: Path, workers: int = 2
) -> tuple[Report, StackProcess]:
    """Start a stack, run the load and the kills, check, stop the stack; returns the report."""
    rng = random.Random(seed)
    report = Report(jobs=n_jobs)
    started = time.monotonic()
    stack = start_stack(workdir, workers=workers, settings=CHAOS_SETTINGS)
    try:
        plan = make_users(stack, n_jobs, rng)
        window = max(4.0, n_jobs * 0.06)  # about how long the load runs on two cores
        chaos = threading.Thread(target=killer, args=(stack, kills, window, random.Random(seed + 1), report))
        chaos.start()
        submit_all(stack, plan, rng, report)
        chaos.join()
        check(stack, report, timeout_s)
    finally:
        stack.stop()
    # Once the workers are gone: while they run, their prepared sandboxes hold processes in slot cgroups.
    report.leaked_cgroups = leaked_cgroups(report.accepted)
    report.seconds = time.monotonic() - started
    return report, stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--kills", type=int, help="workers to SIGKILL (default: jobs/25, at least 3)")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for every job to end")
    parser.add_argument("--workdir", type=Path, help="keep the stack's output and run log here")
    args = parser.parse_args(argv)
    kills = args.kills if args.kills is not None else max(3, args.jobs // 25)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="coderunner-chaos-"))
    report, stack = run_chaos(args.jobs, kills, args.seed, args.timeout, workdir)
    print(report.line(), flush=True)
    print(f"{report.details()}; seed={args.seed}; stack output and run log in {workdir}", file=sys.stderr)
    failures = report.failures()
    if failures:
        print(f"chaos: FAILED {failures}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
