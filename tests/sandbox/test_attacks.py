"""Hostile programs, each run under the full local isolation and under the Lambda-like subset.

Every test asserts the status/reason, that the secret or host resource was not reached, and (through the
`clean_after` fixture) that no process, cgroup or file is left and the next job still runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from conftest import SMALL, run_code

from chalicelib.sandbox.local import Isolation
from chalicelib.sandbox.models import FailureReason

pytestmark = [pytest.mark.usefixtures("clean_after"), pytest.mark.xdist_group("sandbox")]


def test_cpu_loop_stops_on_cpu_time(isolation: Isolation) -> None:
    limits = SMALL.model_copy(update={"wall_time_s": 10, "cpu_time_s": 1})
    result = run_code(isolation, "python3", "while True: pass", limits=limits)
    assert result.reason is FailureReason.CPU_TIME
    assert result.signal in ("SIGXCPU", "SIGKILL")


def test_sleep_forever_stops_on_wall_time(isolation: Isolation) -> None:
    result = run_code(isolation, "bash", "sleep 1000")
    assert result.reason is FailureReason.WALL_TIME
    assert result.signal == "SIGKILL"


@pytest.mark.parametrize(
    ("runtime", "code"),
    [("python3", "import os\nwhile True:\n    os.fork()\n"), ("bash", ":(){ :|:& };:\nsleep 1000\n")],
)
def test_fork_bomb_is_contained(isolation: Isolation, runtime: str, code: str) -> None:
    result = run_code(isolation, runtime, code)
    # The bomb hits the process limit and the main process either fails or is stopped at wall time.
    assert result.reason in (FailureReason.EXIT_CODE, FailureReason.WALL_TIME)


@pytest.mark.parametrize(
    ("runtime", "code"),
    [
        ("python3", "x = b'x' * (2 * 1024**3)\nprint(len(x))\n"),
        ("python3", "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024**2))\n"),
        ("node", "const b = Buffer.alloc(2 * 1024 ** 3, 1); console.log(b.length)"),
        ("node", "const a = []; while (true) a.push(new Array(1e6).fill(1))"),
    ],
)
def test_memory_bomb_is_memory_limit(isolation: Isolation, runtime: str, code: str) -> None:
    # A generous wall time: on a busy machine the bomb must still end on memory, not on the clock.
    result = run_code(isolation, runtime, code, limits=SMALL.model_copy(update={"wall_time_s": 20}))
    assert result.reason is FailureReason.MEMORY_LIMIT, result
    assert result.stdout == ""


def test_one_gigabyte_file_fails_and_leaves_nothing(isolation: Isolation) -> None:
    code = "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 1024**2)\n"
    code += "print('wrote')"
    result = run_code(isolation, "python3", code)
    assert result.reason is FailureReason.EXIT_CODE
    assert "wrote" not in result.stdout
    assert "OSError" in result.stderr or "No space" in result.stderr or "too large" in result.stderr


def test_many_files_cannot_fill_the_disk(full_isolation: Isolation, clean_after: Isolation) -> None:
    # Only under bubblewrap: without it the work dir is on the host disk (Lambda caps /tmp itself).
    code = (
        "i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as f:\n"
        "        f.write(b'x' * 1024**2)\n    i += 1\n"
        "    if i > 4096: print('filled'); break\n"
    )
    if clean_after is not full_isolation:
        pytest.skip("disk filling is only bounded by a size-limited tmpfs under bubblewrap")
    result = run_code(full_isolation, "python3", code)
    assert result.reason in (FailureReason.EXIT_CODE, FailureReason.MEMORY_LIMIT)
    assert "filled" not in result.stdout


def test_hundred_megabytes_to_stdout_is_output_limit(isolation: Isolation) -> None:
    code = "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024**2)\n"
    result = run_code(isolation, "python3", code)
    assert result.reason is FailureReason.OUTPUT_LIMIT
    assert result.stdout_truncated
    assert len(result.stdout) == SMALL.output_kb * 1024


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["ipv4", "ipv6"])
def listener(request: pytest.FixtureRequest) -> Iterator[socket.socket]:
    """A real listening socket on a loopback address, outside the sandbox (tests never target anything else)."""
    family, host = request.param
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


_CONNECT = """
import socket
try:
    with socket.create_connection(("{host}", {port}), timeout=1) as conn:
        conn.sendall(b"escaped")
    print("connected")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print("blocked", exc.errno)
"""


def test_tcp_to_a_loopback_listener_is_refused_inside(isolation: Isolation, listener: socket.socket) -> None:
    host, port = listener.getsockname()[:2]
    result = run_code(isolation, "python3", _CONNECT.format(host=host, port=port))
    # Refused at once inside the sandbox (seccomp: EACCES; bubblewrap: its own empty loopback), not a timeout.
    assert result.stdout.startswith("blocked"), result.stdout
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever reached the host's loopback, so not a byte was sent to it


def test_planted_aws_secret_is_not_in_the_environment(isolation: Isolation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-in-worker-env")
    result = run_code(isolation, "bash", "env; cat /proc/self/environ | tr '\\0' '\\n'")
    assert "planted-secret" not in result.stdout
    assert set(line.split("=")[0] for line in result.stdout.split()) <= {
        "PATH",
        "LANG",
        "HOME",
        "PWD",
        "SHLVL",
        "_",
        "TMPDIR",
    }


def test_etc_shadow_is_unreadable(isolation: Isolation) -> None:
    result = run_code(isolation, "python3", "print(open('/etc/shadow').read())")
    assert result.reason is FailureReason.EXIT_CODE
    assert "root:" not in result.stdout
    assert "PermissionError" in result.stderr or "FileNotFoundError" in result.stderr


_SCAN_PROC = """
import os
found = []
for pid in os.listdir('/proc'):
    for name in ('environ', 'cmdline'):
        try:
            with open(f'/proc/{pid}/{name}', 'rb') as f:
                if b'{secret}' in f.read():
                    found.append((pid, name))
        except OSError:
            pass
print('found', found)
"""


def test_other_processes_secrets_are_unreachable(isolation: Isolation) -> None:
    secret = f"proc-secret-{uuid.uuid4().hex}"
    env = {"PATH": "/usr/bin:/bin", "PLANTED": secret}
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", secret], env=env)
    try:
        result = run_code(isolation, "python3", _SCAN_PROC.replace("{secret}", secret))
    finally:
        victim.kill()
        victim.wait()
    found = result.stdout.strip()
    if isolation.layers()["bwrap"]:
        assert found == "found []"  # private /proc: the host's processes do not exist in there
    else:
        # Without a pid namespace the cmdline is world-readable (the Lambda sandbox runs nothing else),
        # but another uid's environment never is.
        assert "environ" not in found


def test_killing_the_parent_and_everyone_does_not_escape(isolation: Isolation) -> None:
    code = "import os, signal\nfor target in (os.getppid(), -1):\n    try:\n        os.kill(target, 9)\n"
    code += "    except OSError as exc:\n        print('denied', target, exc.errno)\nprint('alive')\n"
    result = run_code(isolation, "python3", code)
    # Either the kill was refused or it only reached the job's own processes; the test process lives on.
    assert result.reason in (None, FailureReason.SIGNAL, FailureReason.EXIT_CODE)
    assert os.getpid() > 0


def test_double_fork_daemon_holding_stdout_does_not_outlive_the_job(isolation: Isolation) -> None:
    code = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(60)\n        print('daemon still here', flush=True)\n    os._exit(0)\n"
        "print('parent done', flush=True)\n"
    )
    result = run_code(isolation, "python3", code, limits=SMALL.model_copy(update={"wall_time_s": 30}))
    assert result.reason is None
    assert result.stdout == "parent done\n"
    # Returning at all (rather than at the 30 s wall time) is the point: the job ended with its main process.
    assert result.wall_ms < 30_000


def test_writing_outside_the_work_dir_fails(isolation: Isolation) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    targets = ["/usr/" + marker, "/etc/" + marker, "/" + marker, "/var/tmp/" + marker]
    code = f"for path in {targets!r}:\n    try:\n        open(path, 'w').write('x')\n"
    code += "        print('wrote', path)\n"
    code += "    except OSError:\n        pass\n"
    result = run_code(isolation, "python3", code)
    assert result.reason is None
    for path in targets:
        assert not os.path.exists(path)
    assert "wrote /usr" not in result.stdout and "wrote /etc" not in result.stdout


def test_symlink_planted_for_host_cleanup_spares_the_target(
    isolation: Isolation, tmp_path_factory: pytest.TempPathFactory
) -> None:
    victim = tmp_path_factory.mktemp("victim")
    canary = victim / "canary.txt"
    canary.write_text("alive")
    os.chmod(victim, 0o777)  # even if the job could reach it, cleanup must not follow the link
    code = f"import os\nos.symlink({str(victim)!r}, 'escape')\nos.symlink({str(canary)!r}, 'canary-link')\n"
    code += "print('planted')"
    result = run_code(isolation, "python3", code)
    assert result.stdout == "planted\n"
    assert canary.read_text() == "alive"
