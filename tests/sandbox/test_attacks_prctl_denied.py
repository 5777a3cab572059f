"""Attacks under the Lambda shape (same uid as the handler) while the platform refuses prctl options.

Lambda runs every environment under its own, unpublished seccomp policy; PR_SET_NAME, PR_SET_PDEATHSIG and
PR_SET_CHILD_SUBREAPER are reported refused there. Each policy below runs a representative subset of the
attack suite in `prctl_harness.py`: every attack must be contained, or the sandbox must refuse to run and say
why, and no process of the job's uid may be left behind.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ALL_PRCTL, SMALL, loopback_listeners

from chalicelib.sandbox import hostclean
from chalicelib.sandbox.local import refusal_reason
from chalicelib.sandbox.models import ExecutionRequest, SourceFile

pytestmark = pytest.mark.xdist_group("sandbox")

HARNESS_UID = 64530  # ours alone: the harness kills by uid and start time
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may sit where an unprivileged uid cannot go
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORTED_IN_LAMBDA = ["PR_SET_NAME", "PR_SET_PDEATHSIG", "PR_SET_CHILD_SUBREAPER", "PR_SET_DUMPABLE"]

_CONNECT = """
import socket
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect((host, {port}[family == socket.AF_INET6]))
            s.sendall(b"escaped")
        print("connected", host)
    except OSError as exc:
        print("blocked", host, exc.errno)
"""
_KILL_ALL = "import os\ntry:\n    os.kill(-1, 9)\nexcept OSError as exc:\n    print('denied', exc.errno)\n"
_DAEMON = (
    "import os, time\n"
    "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
    "print('parent done', flush=True)\n"
)
# A bomb that leaves the job's session first: only a subreaper or the uid scan can find all of it.
_DETACHED_BOMB = (
    "import os\n"
    "if os.fork() == 0:\n    os.setsid()\n    while True:\n        try:\n            os.fork()\n"
    "        except OSError:\n            pass\n"
    "print('bomb planted', flush=True)\n"
)
ATTACKS = {
    "normal_python": ("python3", "print(sum(range(10)))"),
    "normal_node": ("node", "console.log(1 + 1)"),  # node's threads may name themselves (PR_SET_NAME)
    "loopback": ("python3", _CONNECT),
    "kill_all": ("python3", _KILL_ALL),
    "daemon": ("python3", _DAEMON),
    "detached_fork_bomb": ("python3", _DETACHED_BOMB),
}
_ENTRY = {"python3": "main.py", "node": "main.js"}


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    """A real listening socket on 127.0.0.1 and on ::1, outside the sandbox."""
    opened = loopback_listeners()
    yield opened
    for server in opened:
        server.close()


@pytest.fixture
def harness_root() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the harness drops from root to an unprivileged uid of its own")
    probe = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import sys; sys.path[:0] = sys.argv[1:]; import pydantic"]
                           + _paths(), capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"{SYSTEM_PYTHON} cannot import our dependencies: {probe.stderr.decode()[-200:]}")
    # One harness at a time on this host: its cleanup kills every process of HARNESS_UID.
    with hostclean.SlotPool(1, key_base=HARNESS_UID).slot():
        root = tempfile.mkdtemp(prefix="code-runner-prctl-")
        os.chmod(root, 0o755)
        os.chown(root, HARNESS_UID, HARNESS_UID)
        try:
            yield root
        finally:
            left = hostclean.kill_uid(HARNESS_UID)
            shutil.rmtree(root, ignore_errors=True)
            assert left == []


@functools.cache
def _paths() -> list[str]:
    """The sandbox image's code (devtools.sandbox_image: chalicelib.sandbox and pydantic) in a world-readable
    copy: the harness's uid must read it wherever the checkout and its venv are (a clone in a 0700 dir)."""
    from devtools.sandbox_image import build_code_dir

    parent = tempfile.mkdtemp(prefix="code-runner-prctl-code-")
    os.chmod(parent, 0o755)
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return [str(build_code_dir(Path(parent) / "code"))]


def _run_harness(root: str, deny: list[str], ports: list[int]) -> tuple[dict[str, Any], str]:
    requests = []
    for name, (runtime, code) in ATTACKS.items():
        limits = SMALL.model_copy(update={"wall_time_s": 10 if name == "daemon" else 3})
        request = ExecutionRequest(
            job_id=f"prctl-{name}",
            runtime=runtime,
            files=[SourceFile(path=_ENTRY[runtime], content=code.replace("{port}", repr(ports)))],
            limits=limits,
        )
        requests.append(request.model_dump(mode="json"))
    config = {"paths": _paths(), "deny": deny, "uid": HARNESS_UID, "work_root": root, "requests": requests}
    harness = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prctl_harness.py")
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", harness, json.dumps(config)], capture_output=True, timeout=100, cwd=root, env={}
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return json.loads(done.stdout), done.stderr.decode()


def _results(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(zip(ATTACKS, report["outcomes"], strict=True))


def _assert_handler_cleaned_up(report: dict[str, Any], subreaper: bool) -> None:
    handler = report["handler"]
    assert handler["subreaper"] is subreaper
    assert len(handler["before"]) == 1 and handler["after"] == [], handler  # the planted daemon, then none


def test_every_listed_prctl_refused_means_no_lambda_run(harness_root: str, listeners: list[socket.socket]) -> None:
    # Without no_new_privs an unprivileged process cannot load our filter, and without it (or bubblewrap)
    # nothing cuts the network: every run is refused, with the reason.
    report, _ = _run_harness(harness_root, ALL_PRCTL, [s.getsockname()[1] for s in listeners])
    layers = report["layers"]
    assert (layers["no_new_privs"], layers["seccomp"], layers["network"]) == (False, False, False)
    for name, outcome in _results(report).items():
        assert "PR_SET_NO_NEW_PRIVS is refused" in outcome.get("refused", ""), (name, outcome)
        assert outcome["left"] == [], name
    _assert_handler_cleaned_up(report, subreaper=False)
    _assert_nothing_reached(listeners)


def test_lambda_reported_refusals_still_run_and_contain(harness_root: str, listeners: list[socket.socket]) -> None:
    report, log = _run_harness(harness_root, REPORTED_IN_LAMBDA, [s.getsockname()[1] for s in listeners])
    layers = report["layers"]
    assert (layers["subreaper"], layers["pdeathsig"], layers["dumpable"]) == (False, False, False)
    assert (layers["network"], layers["reaping"]) == ("seccomp", "uid-scan")
    results = _results(report)
    for name, outcome in results.items():
        assert "result" in outcome, (name, outcome)
        assert outcome["left"] == [], name  # daemons and detached bombs found and killed
    assert results["normal_python"]["result"]["stdout"] == "45\n"
    assert results["normal_node"]["result"]["stdout"] == "2\n"
    assert results["loopback"]["result"]["stdout"] == "blocked 127.0.0.1 13\nblocked ::1 13\n"
    assert results["kill_all"]["result"]["stdout"] == "denied 1\n"
    assert results["daemon"]["result"]["stdout"] == "parent done\n"
    assert results["daemon"]["result"]["wall_ms"] < 10_000  # ended with its main process, not at wall time
    assert results["detached_fork_bomb"]["result"]["stdout"] == "bomb planted\n"
    # The supervisor's status line named the refusals; the worker logged them once for all runs.
    assert log.count("refused prctl ['pdeathsig', 'subreaper']") == 1, log
    _assert_handler_cleaned_up(report, subreaper=False)
    assert log.count("PR_SET_CHILD_SUBREAPER) refused") == 1, log
    _assert_nothing_reached(listeners)


def test_no_refusal_runs_with_a_subreaper(harness_root: str, listeners: list[socket.socket]) -> None:
    report, log = _run_harness(harness_root, [], [s.getsockname()[1] for s in listeners])
    assert (report["layers"]["reaping"], report["layers"]["network"]) == ("subreaper", "seccomp")
    for name, outcome in _results(report).items():
        assert "result" in outcome and outcome["left"] == [], (name, outcome)
    assert "refused" not in log
    _assert_handler_cleaned_up(report, subreaper=True)
    _assert_nothing_reached(listeners)


def _assert_nothing_reached(listeners: list[socket.socket]) -> None:
    for server in listeners:
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"network": False, "no_new_privs": False}, "PR_SET_NO_NEW_PRIVS is refused"),
        ({"network": False, "seccomp_loadable": False}, "prctl(PR_SET_SECCOMP) and seccomp() are refused"),
        ({"network": False}, "no seccomp filter (it is disabled)"),
        ({"non_root": False}, "root"),
        ({"reaping": False}, "PR_SET_CHILD_SUBREAPER refused, and other slots share the uid"),
    ],
)
def test_a_missing_guarantee_refuses_with_its_reason(changes: dict[str, object], reason: str | None) -> None:
    layers = {"network": "seccomp", "no_new_privs": True, "seccomp_loadable": True, "non_root": True}
    layers |= {"reaping": "uid-scan"} | changes
    found = refusal_reason(layers)  # type: ignore[arg-type]
    assert found is None if reason is None else reason in (found or "")
