"""What a SIGKILLed worker leaves in the local sandbox, and what it does to the next job in its slot.

Found by `make chaos` (a job of an innocent user ended `failed`, signal SIGKILL, attempt 1): a worker
killed mid-run released its slot (the flock died with it) while the sandbox supervisor it started lived
on until the job ended, then killed every process of the slot's uid, by then another worker's job.
Now the supervisor holds the slot's lock too and ends its job as soon as the worker dies (parent-death
signal), and job cgroups are named by slot, so the next run in the slot replaces what a killed worker
left. A worker process stands in for the stack here:
same layers, a slot uid and cgroup name of its own, so nothing else on the host is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.stack import ROOT
from tests.e2e.stackproc import cmdline, descendants

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.xdist_group("e2e"),
    pytest.mark.skipif(os.geteuid() != 0, reason="slot uids and cgroups need root"),
]

UID = 64700
CGROUP = "code-runner-e2e"
ORPHAN_S = 2  # how long the killed worker's job keeps running

WORKER = """
import sys
from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest, SandboxLimits, SourceFile
from chalicelib.sandbox.runner import execute

settings = IsolationSettings(slots=1, slot_uid_base={uid}, work_root=sys.argv[1], cgroup_name="{cgroup}")
limits = SandboxLimits(wall_time_s=10, cpu_time_s=5, memory_mb=128, output_kb=16, processes=16)
job = ExecutionRequest(
    job_id=sys.argv[2], runtime="bash", files=[SourceFile(path="main.sh", content=sys.argv[3])], limits=limits
)
print(execute(job, isolation=Isolation(settings)).model_dump_json(), flush=True)
"""


def _worker(workdir: Path, job_id: str, source: str) -> subprocess.Popen[str]:
    code = WORKER.format(uid=UID, cgroup=CGROUP)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(workdir), job_id, source],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def _job_cgroups() -> list[str]:
    """Every job group under this test's parent groups (job groups are named by slot, not by job)."""
    return [
        f"{controller}/{entry.name}"
        for controller in ("memory", "pids")
        if os.path.isdir(f"/sys/fs/cgroup/{controller}/{CGROUP}")
        for entry in os.scandir(f"/sys/fs/cgroup/{controller}/{CGROUP}")
        if entry.is_dir()
    ]


@pytest.fixture(scope="module")
def after_a_kill(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Worker A is killed while its job runs; worker B then runs a job in the same (only) slot."""
    from chalicelib.sandbox import hostclean
    from chalicelib.sandbox.models import ExecutionResult

    workdir = tmp_path_factory.mktemp("slots")
    doomed = _worker(workdir, "doomed", f"sleep {ORPHAN_S}")
    deadline = time.monotonic() + 20
    while not any(b"sleep" in cmdline(p) for p in descendants(doomed.pid)):
        assert time.monotonic() < deadline and doomed.poll() is None, "worker A never started its job"
        time.sleep(0.02)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    killed_at = time.monotonic()
    innocent = _worker(workdir, "innocent", f"sleep {ORPHAN_S + 1}; echo ok")
    out, _ = innocent.communicate(timeout=30)
    time.sleep(max(0.0, killed_at + ORPHAN_S + 0.5 - time.monotonic()))
    yield ExecutionResult.model_validate_json(out), _job_cgroups()
    hostclean.kill_uid(UID)
    _remove_cgroups()


def _remove_cgroups() -> None:
    for group in _job_cgroups():
        with contextlib.suppress(OSError):  # already gone
            os.rmdir(f"/sys/fs/cgroup/{group}")


def test_the_next_job_in_a_killed_workers_slot_is_not_killed(after_a_kill: Any) -> None:
    result, _ = after_a_kill
    assert (result.signal, result.stdout) == (None, "ok\n"), result


def test_a_killed_workers_job_leaves_no_cgroup(after_a_kill: Any) -> None:
    _, leftovers = after_a_kill
    assert leftovers == []
