"""The attack suite as data: each attack is a program and the check that says whether it was contained.

One catalogue for every place that runs it: tests/sandbox/test_attacks.py runs it under the local sandbox and
the Lambda and Fargate emulations, and `make verify-cloud` submits it to a deployed stack through its API.
So a check reads only what a job's result shows (status, reason, signal, stdout, stderr, wall time); host-side
checks (a planted loopback listener never accepted a connection, no process or file left on the host) are the
tests' own, on top.

The programs find what they attack themselves (listening ports in /proc/net/tcp*, other processes in /proc,
the code directory from their command lines) and print what they reached, never a secret's value: a line
starting with "ESCAPED" is a breach. Network attacks only ever connect to loopback addresses. A job's stdin
may carry a marker (a planted secret the caller knows) that the scans look for too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["contained", "escaped", "refused", "inconclusive"]

# The limits every attack gets unless it says otherwise (API names; within a pro key's caps).
BASE_LIMITS: dict[str, float | int] = {
    "wall_time_s": 5,
    "cpu_time_s": 2,
    "memory_mb": 128,
    "output_kb": 16,
    "processes": 16,
}
CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
ALLOWED_ENV = {"PATH", "LANG", "HOME", "PWD", "SHLVL", "_", "TMPDIR"}


@dataclass(frozen=True)
class Outcome:
    """What a run of one attack came to: `ran` with the result (ExecutionResult fields), the sandbox
    `refused` to run user code (`detail` says why), or an `error` of the platform (`detail`)."""

    status: Literal["ran", "refused", "error"]
    result: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def stdout(self) -> str:
        return str(self.result.get("stdout") or "")

    @property
    def stderr(self) -> str:
        return str(self.result.get("stderr") or "")

    @property
    def reason(self) -> str | None:
        return self.result.get("reason")


Check = Callable[[Outcome], str | None]  # None when contained, else what escaped (or what went wrong)


@dataclass(frozen=True)
class Attack:
    """One hostile program. `then`: a second program run right after in the same sandbox (a warm Lambda
    environment reuses its process), whose outcome the check reads. `needs`: a layer the attack is only
    bounded by (it is skipped where that layer is off). `error_is_contained`: the attack may only break its
    own run (killing its own supervisor), so a platform error is an acceptable end."""

    name: str
    runtime: str
    source: str
    check: Check
    limits: dict[str, float | int] = field(default_factory=dict)
    stdin: str = ""
    marker_stdin: bool = False  # the caller's marker (a planted secret it knows) is the job's stdin
    then: Attack | None = None
    needs: str | None = None
    error_is_contained: bool = False
    description: str = ""

    @property
    def all_limits(self) -> dict[str, float | int]:
        return {**BASE_LIMITS, **self.limits}


def verdict(attack: Attack, first: Outcome, second: Outcome | None = None) -> tuple[Verdict, str]:
    """How the attack ended: refused (nothing ran, the sandbox said why), contained, escaped, or inconclusive
    (the platform failed, so the run shows nothing either way). Each program's check reads its own outcome."""
    runs = [(attack, first)]
    if attack.then is not None:
        if second is None:
            return "inconclusive", "the follow-up job did not run"
        runs.append((attack.then, second))
    for program, outcome in runs:
        if outcome.status == "refused":
            return "refused", outcome.detail
        if outcome.status == "error" and not program.error_is_contained:
            return "inconclusive", outcome.detail
        problem = program.check(outcome) if outcome.status == "ran" else None
        if problem is not None:
            return "escaped", problem
    return "contained", ""


# -- checks -------------------------------------------------------------------------------------------------


def no_escaped_lines(outcome: Outcome) -> str | None:
    lines = [line for line in outcome.stdout.splitlines() if line.startswith("ESCAPED")]
    return "; ".join(lines)[:500] if lines else None


def _reason_in(*reasons: str | None) -> Check:
    def check(outcome: Outcome) -> str | None:
        if outcome.reason not in reasons:
            return f"ended with reason {outcome.reason!r}, expected one of {reasons}"
        return no_escaped_lines(outcome)

    return check


def _and(*checks: Check) -> Check:
    def check(outcome: Outcome) -> str | None:
        for one in checks:
            problem = one(outcome)
            if problem is not None:
                return problem
        return None

    return check


def _stdout_is(expected: str) -> Check:
    def check(outcome: Outcome) -> str | None:
        return None if outcome.stdout == expected else f"stdout {outcome.stdout[:200]!r}, expected {expected!r}"

    return check


def _no_memory_output(outcome: Outcome) -> str | None:
    return None if outcome.stdout == "" else f"the allocation succeeded: {outcome.stdout[:100]!r}"


def _output_capped(outcome: Outcome) -> str | None:
    cap = int(BASE_LIMITS["output_kb"]) * 1024
    if not outcome.result.get("stdout_truncated") or len(outcome.stdout) != cap:
        return f"output not capped at {cap} bytes: {len(outcome.stdout)}"
    return None


def _environment_clean(outcome: Outcome) -> str | None:
    names = {line.split("=", 1)[0] for line in outcome.stdout.splitlines() if "=" in line}
    leaked = sorted(names - ALLOWED_ENV)
    if any(name in outcome.stdout for name in CREDENTIAL_NAMES) or leaked:
        return f"the job's environment holds {leaked}"
    return None


def _file_unreadable(outcome: Outcome) -> str | None:
    return "read /etc/shadow" if "root:" in outcome.stdout else None


def _daemon_gone(outcome: Outcome) -> str | None:
    if outcome.stdout != "parent done\n" or int(outcome.result.get("wall_ms") or 0) >= 30_000:
        return f"the daemon outlived its job: {outcome.stdout[:200]!r}, {outcome.result.get('wall_ms')} ms"
    return None


def _kill_denied(outcome: Outcome) -> str | None:
    return None if "denied" in outcome.stdout else f"kill(-1) was not refused: {outcome.stdout[:200]!r}"


def _next_job_runs(outcome: Outcome) -> str | None:
    return None if outcome.stdout == "still fine\n" else f"the next job did not run: {outcome.stdout[:200]!r}"


# -- programs -----------------------------------------------------------------------------------------------

_PROC_SCAN = r"""
import os, re, sys
marker = sys.stdin.read().strip().encode()
names = [("AWS_" + n).encode() for n in ("SECRET_" + "ACCESS_KEY", "SESSION_" + "TOKEN", "ACCESS_" + "KEY_ID")]
key_id = re.compile(rb"(AKIA|ASIA)[A-Z0-9]{16}")
me, found, readable = os.getpid(), [], 0

def hit(blob, env=False, names=names):
    if marker and marker in blob:
        return "the planted marker"
    for name in names:
        if (name + b"=" in blob) if env else (name in blob):
            return name.decode()
    return "an access key id" if key_id.search(blob) else None

def memory(pid):
    total = 0
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            while start < end and total < (256 << 20):
                size = min(end - start, 1 << 20)
                try:
                    mem.seek(start)
                    chunk = mem.read(size)
                except (OSError, OverflowError, ValueError):
                    break
                total += len(chunk)
                what = hit(chunk)
                if what:
                    return what
                start += size
    return None

for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid == me:
        continue
    for kind in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{kind}", "rb") as f:
                blob = f.read()
        except OSError:
            continue
        # any readable environment is searched for credentials; command lines (world-readable, and on a
        # developer's host full of other people's processes) only for the marker and access key ids
        what = hit(blob, env=True) if kind == "environ" else hit(blob.replace(b"\0", b" "), env=True, names=())
        if what:
            found.append(f"{kind} of {pid}: {what}")
    try:
        what = memory(pid)
        readable += 1
    except OSError:
        continue
    if what:
        found.append(f"mem of {pid}: {what}")
for line in found:
    print("ESCAPED", line)
print("other processes' memory readable:", readable)
"""

_LISTENERS = r"""
def listeners():
    found = []
    for path, host in (("/proc/net/tcp", "127.0.0.1"), ("/proc/net/tcp6", "::1")):
        try:
            lines = open(path).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, port = local.split(":")
            loopback = set(address) == {"0"} or address in ("0100007F", "00000000000000000000000001000000")
            if state == "0A" and loopback:  # LISTEN, on a loopback or a wildcard address: reachable on loopback
                found.append((host, int(port, 16)))
    return sorted(set(found))[:300]
"""

_LOOPBACK_SCAN = (
    _LISTENERS
    + r"""
import socket
targets = listeners()
print("listeners", len(targets))
errors = set()
for host, port in targets:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect((host, port))
            print("ESCAPED connected to", host, port)
    except OSError as exc:
        errors.add(exc.errno)
print("refused", sorted(e for e in errors if e is not None))
"""
)

_RUNTIME_API = (
    _LISTENERS
    + r"""
import json, os, socket
candidates = []
api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
if api:
    print("ESCAPED the Runtime API's address is in the job's environment")
    host, _, port = api.rpartition(":")
    candidates.append((host, int(port)))
candidates += [("127.0.0.1", 9001)] + listeners()
forged = json.dumps({"kind": "result", "body": json.dumps({"exit_code": 0, "stdout": "all accepted"}), "mac": "0" * 64})
for host, port in candidates:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for path in ("/2018-06-01/runtime/invocation/next", "/2018-06-01/runtime/invocation/forged/response"):
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                body = forged.encode() if path.endswith("response") else b""
                method = "POST" if body else "GET"
                s.sendall(f"{method} {path} HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                print("ESCAPED reached", host, port, path)
        except OSError:
            break
print("tried", len(candidates))
"""
)

_AWS_FILES = r"""
import glob, os
paths = [os.path.expanduser("~/.aws/credentials"), os.path.expanduser("~/.aws/config")]
paths += glob.glob("/root/.aws/*") + glob.glob("/home/*/.aws/*") + glob.glob("/home/*/.aws/**", recursive=True)
for variable in ("AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE"):
    if os.environ.get(variable):
        paths.append(os.environ[variable])
for path in sorted(set(paths)):
    try:
        with open(path) as f:
            if f.read().strip():
                print("ESCAPED read", path)
    except OSError:
        pass
for path in ("/proc/self/environ",):
    with open(path, "rb") as f:
        if b"AWS_" in f.read():
            print("ESCAPED AWS variables in", path)
print("done")
"""

_SOCKETS = r"""
import socket
tries = [("AF_INET", socket.AF_INET, socket.SOCK_STREAM), ("AF_INET/udp", socket.AF_INET, socket.SOCK_DGRAM),
         ("AF_INET6", socket.AF_INET6, socket.SOCK_STREAM), ("AF_PACKET", 17, socket.SOCK_RAW),
         ("AF_VSOCK", 40, socket.SOCK_STREAM)]
for name, family, kind in tries:
    try:
        socket.socket(family, kind).close()
        print("ESCAPED opened an", name, "socket")
    except OSError as exc:
        print("refused", name, exc.errno)
"""

_KILL_ALL = (
    "import os\ntry:\n    os.kill(-1, 9)\n    print('killed')\nexcept OSError as e:\n    print('denied', e.errno)\n"
)
_KILL_PARENT = "import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError as e:\n    print('denied', e.errno)\n"
_STILL_FINE = "print(input())"

_DAEMON = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
    "        time.sleep(60)\n        print('daemon still here', flush=True)\n    os._exit(0)\n"
    "print('parent done', flush=True)\n"
)

_WRITE_CODE = r"""
import os, uuid
mine = {os.path.realpath(p) for p in (os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", "")) if p}
shared = {"/tmp", "/var/tmp", "/dev/shm"}  # world-writable: the sandbox sweeps what a job leaves there
targets = {"/", "/usr", "/etc", "/bin", "/var/task", "/opt", "/app", "/var/runtime", "/root", "/home"}
for pid in os.listdir("/proc"):
    try:
        args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
    except OSError:
        continue
    for arg in args:  # a code directory, from a command line (a script, the supervisor's path)
        if arg.startswith("/") and "/chalicelib/" in arg:
            targets.add(arg.split("/chalicelib/", 1)[0])
        elif arg.startswith("/") and arg.endswith(".py"):
            targets.add(os.path.dirname(arg))
    try:
        targets.add(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        pass
for target in sorted(targets):
    real = os.path.realpath(target)
    if real in shared or real.startswith("/tmp/") or any(real == m or real.startswith(m + "/") for m in mine):
        continue
    path = os.path.join(real, f"coderunner-attack-{uuid.uuid4().hex}")
    try:
        with open(path, "w") as f:
            f.write("x")
        os.unlink(path)
        print("ESCAPED wrote into", real)
    except OSError:
        pass
print("tried", len(targets))
"""

_PLANT_DAEMON = r"""
import os, subprocess, sys
code = (
    "import os, time\n"
    "for _ in range(600):\n"
    "    for root in (os.environ.get('TMPDIR', '/tmp'), '/tmp'):\n"
    "        try:\n"
    "            open(os.path.join(root, 'coderunner-attack-heartbeat'), 'w').write(str(time.time()))\n"
    "        except OSError:\n"
    "            pass\n"
    "    time.sleep(0.1)\n"
)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv(sys.executable, [sys.executable, "-c", code, "coderunner-attack-daemon"])
    os._exit(0)
print("planted", flush=True)
"""

_FIND_DAEMON = r"""
import os, time
time.sleep(0.3)  # a surviving daemon would have written its heartbeat by now
me = os.getpid()
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    try:
        if b"coderunner-attack-" + b"daemon" in open(f"/proc/{pid}/cmdline", "rb").read():
            print("ESCAPED the previous job's daemon is still running:", pid)
    except OSError:
        pass
for root in {"/tmp", "/var/tmp", "/dev/shm", os.environ.get("TMPDIR", "/tmp"), os.getcwd()}:
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count("/") - root.count("/") >= 1:
            dirnames[:] = []
        for name in filenames:
            if name.startswith("coderunner-attack-" + "heartbeat"):
                print("ESCAPED the previous job's daemon wrote", os.path.join(dirpath, name))
print("searched")
"""

_PLANT_FILES = r"""
import os
for root in {os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp", "/dev/shm"}:
    if root:
        try:
            with open(os.path.join(root, "coderunner-attack-marker"), "w") as f:
                f.write("left by the previous job")
        except OSError:
            pass
print("planted")
"""

_FIND_FILES = r"""
import os
for root in {os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", ""), "/tmp", "/var/tmp", "/dev/shm"}:
    if not root:
        continue
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath.count("/") - root.count("/") >= 1:
            dirnames[:] = []
        for name in filenames:
            if name.startswith("coderunner-attack-" + "marker"):
                print("ESCAPED a file of the previous job:", os.path.join(dirpath, name))
print("searched")
"""

_MANY_FILES = (
    "i = 0\nwhile True:\n    with open(f'f{i}', 'wb') as f:\n"
    "        f.write(b'x' * 1024**2)\n    i += 1\n"
    "    if i > 4096: print('filled'); break\n"
)
_BIG_FILE = "with open('big', 'wb') as f:\n    for _ in range(1024):\n        f.write(b'x' * 1024**2)\nprint('wrote')\n"


def _big_file_failed(outcome: Outcome) -> str | None:
    if outcome.reason != "exit_code" or "wrote" in outcome.stdout:
        return f"a 1 GB file was written: {outcome.reason}, {outcome.stdout[:100]!r}"
    return None


def _disk_not_filled(outcome: Outcome) -> str | None:
    if outcome.reason not in ("exit_code", "memory_limit") or "filled" in outcome.stdout:
        return f"4 GB of files were written: {outcome.reason}"
    return None


# A busy machine must still end a memory bomb on memory, not on the clock.
_MEMORY: dict[str, float | int] = {"wall_time_s": 20}
# A fork bomb hits the process cap; its main process fails or waits for the wall time.
_BOMB = _reason_in("exit_code", "wall_time")

ATTACKS: tuple[Attack, ...] = (
    Attack("cpu_loop", "python3", "while True: pass", _reason_in("cpu_time"), {"wall_time_s": 10, "cpu_time_s": 1}),
    Attack("sleep_forever", "bash", "sleep 1000", _reason_in("wall_time"), {"wall_time_s": 2}),
    Attack("fork_bomb_python", "python3", "import os\nwhile True:\n    os.fork()\n", _BOMB),
    Attack("fork_bomb_bash", "bash", ":(){ :|:& };:\nsleep 1000\n", _BOMB),
    Attack("memory_bomb_python", "python3", "x = b'x' * (2 * 1024**3)\nprint(len(x))\n",
           _and(_reason_in("memory_limit"), _no_memory_output), _MEMORY),
    Attack("memory_growth_python", "python3", "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 * 1024**2))\n",
           _and(_reason_in("memory_limit"), _no_memory_output), _MEMORY),
    Attack("memory_bomb_node", "node", "const b = Buffer.alloc(2 * 1024 ** 3, 1); console.log(b.length)",
           _and(_reason_in("memory_limit"), _no_memory_output), _MEMORY),
    Attack("memory_growth_node", "node", "const a = []; while (true) a.push(new Array(1e6).fill(1))",
           _and(_reason_in("memory_limit"), _no_memory_output), _MEMORY),
    Attack("one_gigabyte_file", "python3", _BIG_FILE, _big_file_failed, {"wall_time_s": 10}),
    Attack("many_files", "python3", _MANY_FILES, _disk_not_filled, {"wall_time_s": 10}, needs="bwrap"),
    Attack("stdout_flood", "python3", "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1024**2)\n",
           _and(_reason_in("output_limit"), _output_capped)),
    Attack("environment", "bash", "env; cat /proc/self/environ | tr '\\0' '\\n'", _environment_clean),
    Attack("etc_shadow", "python3", "print(open('/etc/shadow').read())",
           _and(_reason_in("exit_code"), _file_unreadable)),
    Attack("proc_environ_cmdline_mem", "python3", _PROC_SCAN, no_escaped_lines, {"wall_time_s": 20, "cpu_time_s": 10},
           marker_stdin=True, description="read every process's environ, cmdline and memory for credentials"),
    Attack("loopback_listeners", "python3", _LOOPBACK_SCAN, no_escaped_lines, {"wall_time_s": 20},
           description="connect to every listening loopback port found in /proc/net/tcp*"),
    Attack("runtime_api", "python3", _RUNTIME_API, no_escaped_lines, {"wall_time_s": 20},
           description="find the Lambda Runtime API and post a forged response to it"),
    Attack("aws_files", "python3", _AWS_FILES, no_escaped_lines, description="read ~/.aws and /proc/self/environ"),
    Attack("inet_sockets", "python3", _SOCKETS, no_escaped_lines,
           description="open AF_INET, AF_INET6, AF_PACKET and AF_VSOCK sockets (the way to the metadata endpoints)"),
    Attack("kill_everyone", "python3", _KILL_ALL, _kill_denied),
    Attack("kill_parent", "python3", _KILL_PARENT, lambda _: None, error_is_contained=True,
           then=Attack("kill_parent_next", "python3", _STILL_FINE, _next_job_runs, stdin="still fine")),
    Attack("daemon_holding_stdout", "python3", _DAEMON, _daemon_gone, {"wall_time_s": 30}),
    Attack("write_code_directory", "python3", _WRITE_CODE, no_escaped_lines, {"wall_time_s": 10},
           description="write into the code directory (found from command lines), /, /usr, /etc, /var/task"),
    Attack("process_into_next_invocation", "python3", _PLANT_DAEMON, no_escaped_lines,
           then=Attack("process_into_next_invocation_find", "python3", _FIND_DAEMON, no_escaped_lines)),
    Attack("files_into_next_invocation", "python3", _PLANT_FILES, no_escaped_lines,
           then=Attack("files_into_next_invocation_find", "python3", _FIND_FILES, no_escaped_lines)),
)  # fmt: skip

BY_NAME = {attack.name: attack for attack in ATTACKS}


@dataclass(frozen=True)
class NormalJob:
    """A job that is not an attack, with the verdict every sandbox must give it (for verdict parity)."""

    name: str
    runtime: str
    source: str
    status: str
    reason: str | None
    stdout: str | None = None
    stdin: str = ""
    limits: dict[str, float | int] = field(default_factory=dict)
    signal: str | None = None

    def problem(self, job: dict[str, Any]) -> str | None:
        """None when `job` (as the API returns it) ended as expected."""
        result = job.get("result") or {}
        got = (job.get("status"), result.get("reason"))
        if got != (self.status, self.reason):
            return (
                f"{got}, expected {(self.status, self.reason)}: {job.get('error') or result.get('stderr', '')[-200:]}"
            )
        if self.stdout is not None and result.get("stdout") != self.stdout:
            return f"stdout {result.get('stdout')!r}, expected {self.stdout!r}"
        if self.signal is not None and result.get("signal") != self.signal:
            return f"signal {result.get('signal')!r}, expected {self.signal!r}"
        return None


NORMAL_JOBS: tuple[NormalJob, ...] = (
    NormalJob("python", "python3", "print(input() * 2)", "succeeded", None, "abab\n", stdin="ab"),
    NormalJob("node", "node", "const s = require('fs').readFileSync(0, 'utf8'); console.log(s + s)", "succeeded", None,
              "abab\n", stdin="ab"),
    NormalJob("bash", "bash", 'read x; echo "$x$x"', "succeeded", None, "abab\n", stdin="ab"),
    NormalJob("exit_code", "python3", "import sys; sys.exit(3)", "failed", "exit_code"),
    NormalJob("timeout", "python3", "import time; time.sleep(30)", "timed_out", "wall_time", limits={"wall_time_s": 2}),
    NormalJob("memory_limit", "python3", "x = bytearray(512 * 1024 * 1024)", "failed", "memory_limit",
              limits={"memory_mb": 128, "wall_time_s": 20}),
    NormalJob("output_limit", "python3", "print('x' * 200_000)", "failed", "output_limit", limits={"output_kb": 16}),
    NormalJob("signal", "python3", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "failed", "signal",
              signal="SIGSEGV"),
)  # fmt: skip
