"""The warm sandbox pool: a prepared sandbox runs a program exactly as a directly started one, serves one job,
leaves nothing to the next, is never handed out broken, and never takes the host's last free slot.

The attack suite runs with the pool on too (conftest: every isolation has a pool of one).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LAMBDA_SLOT, SMALL, run_code

from chalicelib.sandbox import hostclean, lambda_entry
from chalicelib.sandbox.local import Isolation, IsolationSettings
from chalicelib.sandbox.models import ExecutionRequest, ExecutionResult, SourceFile
from tests.waiting import wait_for

pytestmark = pytest.mark.xdist_group("sandbox")

UID_BASE = 64560  # slots of this module's own isolations: other sandbox tests on the host never take them
SLOTS = 3

# Everything a program can observe about how it was started, printed so that two runs can be compared.
VIEW = r"""
import ctypes, os, re, sys
def status(keys):
    found = {}
    for line in open('/proc/self/status'):
        key, _, value = line.partition(':')
        if key in keys:
            found[key] = value.strip()
    return found
def link(fd):
    try:
        return re.sub(r'\[\d+\]', '', os.readlink(f'/proc/self/fd/{fd}'))
    except OSError:
        return None
fds = sorted(os.listdir('/proc/self/fd'), key=int)
print('argv', sys.argv, sys.orig_argv)
print('main', __name__, __file__, sorted(sys.modules))
print('fds', [(fd, link(fd)) for fd in fds[:-1]])
print('status', status({'SigIgn', 'SigBlk', 'SigCgt', 'NoNewPrivs', 'Seccomp', 'Seccomp_filters', 'CapInh',
                         'CapPrm', 'CapEff', 'CapBnd', 'CapAmb', 'Uid', 'Gid', 'Groups', 'Umask'}))
print('dumpable', ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))
print('cwd', os.getcwd(), 'env', sorted(os.environ.items()))
print('session', os.getpgrp() == os.getsid(0), os.getpid() == os.getsid(0))
print('limits', open('/proc/self/limits').read())
print('nice', os.nice(0), 'affinity', sorted(os.sched_getaffinity(0)), 'priority', os.getpriority(os.PRIO_PROCESS, 0))
for root, dirs, files in os.walk('.'):
    for name in sorted(dirs + files):
        st = os.lstat(os.path.join(root, name))
        print('file', os.path.join(root, name), oct(st.st_mode), st.st_uid, st.st_gid, st.st_size)
print('tmp', sorted(os.listdir('/tmp')) if os.environ.get('HOME') == '/work' else '-')
if os.environ.get('HOME') == '/work':  # bubblewrap: its own pid namespace and mounts
    print('pids', os.getpid(), os.getppid(), sorted(p for p in os.listdir('/proc') if p.isdigit()))
    print('mounts', [' '.join(line.split()[3:]) for line in open('/proc/self/mountinfo')])
print('stdin', repr(sys.stdin.read()))
"""


def _normal(text: str) -> str:
    """A run's view without what differs between any two runs: pipe numbers, slot numbers."""
    return re.sub(r"slot-\d+", "slot-N", re.sub(r"pipe:\[\d+\]", "pipe", text))


@pytest.fixture(params=["full", "lambda_like"])
def pair(request: pytest.FixtureRequest, sandbox_root: str) -> Iterator[tuple[Isolation, Isolation]]:
    """A direct isolation and a pooled one with the same layers and slots."""
    overrides: dict[str, object] = {} if request.param == "full" else {"use_bwrap": False, "use_cgroups": False}
    base: dict[str, object] = {
        "slots": SLOTS,
        "slot_uid_base": UID_BASE,
        "work_root": os.path.join(sandbox_root, "pool-work"),
        "cgroup_name": "code-runner-pool-tests",
        **overrides,
    }
    direct = Isolation(IsolationSettings.model_validate(base))
    pooled = Isolation(IsolationSettings.model_validate({**base, "pool_size": 1}))
    if request.param == "full" and (os.geteuid() != 0 or not direct.layers()["bwrap"]):
        pytest.skip(f"full local isolation needs root and bubblewrap here: {direct.layers()}")
    if not direct.layers()["seccomp"]:
        pytest.skip("this kernel does not let us load a seccomp filter")
    yield direct, pooled
    assert pooled.pool is not None
    pooled.pool.drain()
    for slot in range(SLOTS):
        assert hostclean.pids_of_uid(UID_BASE + slot) == []


def _served(iso: Isolation) -> int:
    assert iso.pool is not None
    return iso.pool.stats["served"]


def _pooled_run(iso: Isolation, runtime: str, code: str, **kw: object) -> ExecutionResult:
    """Run in a prepared sandbox, and check that it was one."""
    assert iso.pool is not None and iso.pool.wait_filled(30), iso.pool.stats
    before = _served(iso)
    result = run_code(iso, runtime, code, **kw)
    assert _served(iso) == before + 1, "the run did not take the prepared sandbox"
    return result


def test_a_prepared_sandbox_runs_the_program_as_a_direct_start_does(pair: tuple[Isolation, Isolation]) -> None:
    direct, pooled = pair
    files = [SourceFile(path="main.py", content=VIEW), SourceFile(path="lib/data/x.txt", content="x")]
    runs = []
    for iso in (direct, pooled):
        if iso.pool is not None:
            assert iso.pool.wait_filled(30)
        request = ExecutionRequest(
            job_id="view", runtime="python3", files=files, stdin="in\n", args=["a1", "a 2"], limits=SMALL
        )
        from chalicelib.sandbox.runner import execute

        runs.append(execute(request, isolation=iso))
    assert _served(pooled) == 1
    (plain, warm) = runs
    assert plain.reason is None and warm.reason is None, (plain.stderr, warm.stderr)
    assert _normal(warm.stdout) == _normal(plain.stdout)
    assert warm.stderr == plain.stderr == ""


SESSION = uuid.uuid4().hex[:8]  # traces of this test run only, whatever else runs on the host
# A bash job: prints the traces of earlier jobs it can find (files, processes, environment), then plants its
# own: files in the work dir, /tmp, /var/tmp and /dev/shm, a line in ~/.bashrc, a detached daemon.
TRACES = f"""
own=trace-{SESSION}-$1
seen=$( (ls -A /tmp /var/tmp /dev/shm . ; cat /proc/[0-9]*/cmdline | tr '\\0' '\\n'; env; cat ~/.bashrc) 2>/dev/null \\
  | grep -o 'trace-{SESSION}-[0-9a-f]\\{{12\\}}' | grep -vx "$own" | sort -u | tr '\\n' ' ')
echo "seen:$seen"
for dir in . /tmp /var/tmp /dev/shm; do echo x > $dir/$own 2>/dev/null; done
echo "export MARK=$own" >> ~/.bashrc
(setsid bash -c "exec -a $own sleep 1000" </dev/null >/dev/null 2>&1 &)
echo "planted:$(ls -A . /tmp | grep -cx "$own")"
"""


def test_nothing_of_one_job_is_visible_to_the_next(pair: tuple[Isolation, Isolation]) -> None:
    direct, pooled = pair
    # 100 in the full isolation; fewer in the Lambda shape, whose cleanup scans the host's /tmp and /proc.
    for _ in range(100 if direct.layers()["bwrap"] else 40):
        result = _pooled_run(pooled, "bash", TRACES, args=[uuid.uuid4().hex[:12]])
        assert result.stdout == "seen:\nplanted:2\n", result  # the search finds traces: its own


def _prepared(iso: Isolation) -> tuple[int, int]:
    """The supervisor's and the stub's pid of the one prepared sandbox (the pool is full)."""
    assert iso.pool is not None and iso.pool.wait_filled(30)
    (sandbox,) = iso.pool._idle
    # bubblewrap's processes carry the stub's command line too, after their own.
    stubs = [pid for pid, _ in iso.pool.processes() if _cmdline(pid).startswith(b"/usr/bin/python3\0-I\0-S\0-c\0")]
    assert len(stubs) == 1
    return sandbox.supervisor.pid, stubs[0]


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as handle:
        return handle.read()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize("victim", ["stub", "supervisor"])
def test_a_crashed_prepared_sandbox_is_replaced_not_handed_out(pair: tuple[Isolation, Isolation], victim: str) -> None:
    _, pooled = pair
    assert pooled.pool is not None
    supervisor, stub = _prepared(pooled)
    os.kill(stub if victim == "stub" else supervisor, signal.SIGKILL)
    # A crash before the job arrives: the supervisor exits (it sees its stub go) and is a zombie of ours.
    wait_for(lambda: _state(supervisor) == "Z", "the prepared sandbox's supervisor to exit with its stub")
    result = run_code(pooled, "python3", "print('still served')")
    assert (result.reason, result.stdout) == (None, "still served\n")
    assert pooled.pool.stats["unhealthy"] == 1
    # Refilled with a working one, which the next job takes.
    assert _pooled_run(pooled, "python3", "print('warm again')").stdout == "warm again\n"


def test_a_pool_never_takes_the_last_free_slot() -> None:
    with tempfile.TemporaryDirectory() as locks:
        slots = hostclean.SlotPool(3, key_base=10, lock_dir=locks)
        first = slots.acquire(keep_free=1)
        second = slots.acquire(keep_free=1)
        assert first is not None and second is not None
        assert slots.acquire(keep_free=1) is None  # one slot left: a pool leaves it to runs
        run = slots.acquire()
        assert run is not None and slots.acquire() is None
        for held in (first, second, run):
            slots.release(held)
        assert slots.acquire(keep_free=2) is not None


_STRAY = "import subprocess, sys; p = subprocess.Popen(['sleep', '1000']); print(p.pid)"


_HANDLER = """
import json, os, subprocess, sys
os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "sandbox"  # this process is the handler: its descendants are its own
from chalicelib.sandbox import integrity, kernel, lambda_entry
from chalicelib.sandbox.models import ExecutionResult
request = json.loads(sys.argv[1])
key = integrity.new_key()
pool = lambda_entry.lambda_isolation(os.environ[lambda_entry.SCRATCH_ENV]).pool

def stdout():
    answer = lambda_entry.handle({"request": request, "key": key}, None)
    sealed = integrity.open_sealed(answer, key, request["job_id"])
    assert sealed.kind == "result", sealed.body
    return ExecutionResult.model_validate_json(sealed.body).stdout

first = stdout()
prepared = pool.processes()  # started by the handler for the next invocation
stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])  # what a job left running
stray_started = kernel.start_ticks(stray.pid)
killed = lambda_entry.kill_leftovers(spare=prepared)
try:
    stray_alive = kernel.start_ticks(stray.pid) == stray_started
except OSError:
    stray_alive = False
spared = all(kernel.start_ticks(pid) == started for pid, started in prepared)
served = pool.stats["served"]
second = stdout()
print(json.dumps({"first": first, "second": second, "prepared": len(prepared), "killed": killed,
                  "stray_alive": stray_alive, "spared": spared, "served": pool.stats["served"] - served,
                  "unhealthy": pool.stats["unhealthy"]}))
pool.close()
"""


def test_the_lambda_handler_spares_its_prepared_sandbox_and_kills_the_rest(sandbox_root: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="lambda-pool-", dir=sandbox_root))
    os.chmod(root, 0o711)
    request = ExecutionRequest(
        job_id="lambda-pool",
        runtime="python3",
        files=[SourceFile(path="main.py", content="print(6 * 7)")],
        limits=SMALL,
    ).model_dump_json()
    env = {
        **os.environ,
        lambda_entry.SCRATCH_ENV: str(root),
        lambda_entry.SLOT_ENV: str(LAMBDA_SLOT),  # not a running stack's slot
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _HANDLER, request], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["first"] == report["second"] == "42\n"
    assert report["prepared"] > 0 and report["spared"] and not report["stray_alive"]
    assert report["killed"] >= 1
    assert report["served"] == 1 and report["unhealthy"] == 0
