"""Every attack of the suite (devtools/attacks.py) under all three sandboxes, as the uid each really uses.

- local: each attack alone under the full local isolation and under the Lambda-like subset, as a slot uid;
  afterwards the host is clean and a normal job still runs (`clean_after`);
- Lambda: through the worker's `LambdaSandbox` on the emulator: the environment's uid, the handler's own,
  with the stack's credentials (a planted secret) in the handler's environment and a live Runtime API;
- Fargate: through `FargateSandbox` on moto and the emulator: the task's uid, the entry's own.
The attacks read /proc, scan loopback listeners, post to the Runtime API, try every socket family, kill(-1),
write into the code directory, and leave processes and files for the next invocation of a warm environment.
On top of each attack's own check: the planted secret is in no job's output, no planted loopback listener
ever accepted a connection, the Runtime API only ever heard the handler, and nothing of a job outlives it.
The suite also runs where the platform refuses prctl options (CODERUNNER_EMULATE_DENY_PRCTL): every listed
option refused makes the Lambda sandbox refuse and say why; the options Lambda is known to refuse change
nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from conftest import PLANTED_SECRET, SLOTS, UID_BASE, Emulated, assert_host_clean, loopback_listeners, run_code
from sandboxes import FargateRunner, LocalRunner, Report, SyncRunner, run_attack, run_suite

from chalicelib.sandbox import hostclean
from chalicelib.sandbox.local import Isolation
from devtools.attacks import ATTACKS, Attack, verdict

# The local tests share slot uids with the other sandbox tests (one xdist worker); the emulations share the
# emulators (another worker, so both halves run side by side).
local = pytest.mark.xdist_group("sandbox")
cloud = pytest.mark.xdist_group("emulators")
NAMES = [attack.name for attack in ATTACKS]


def assert_nothing_reached(listeners: list[socket.socket]) -> None:
    """Real listening sockets on loopback, outside every sandbox: not one connection ever arrived."""
    for server in listeners:
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[socket.socket]]:
    """The worker's own secret and two loopback listeners, as the local sandbox's worker would have them."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    opened = loopback_listeners()
    yield opened
    for server in opened:
        server.close()


# -- local ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=NAMES)
@local
def test_attack_is_contained_locally(clean_after: Isolation, attack: Attack, planted: list[socket.socket]) -> None:
    if attack.needs and not clean_after.layers()[attack.needs]:
        pytest.skip(f"only bounded by {attack.needs}, which this isolation does not have")
    outcomes = run_attack(LocalRunner(clean_after), attack, PLANTED_SECRET)
    found, why = verdict(attack, *outcomes)
    assert found == "contained", (why, outcomes)
    assert not any(PLANTED_SECRET in o.stdout + o.stderr for o in outcomes)
    assert_nothing_reached(planted)


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


@local
def test_tcp_to_a_loopback_listener_is_refused_inside(clean_after: Isolation, listener: socket.socket) -> None:
    host, port = listener.getsockname()[:2]
    result = run_code(clean_after, "python3", _CONNECT.format(host=host, port=port))
    # Refused at once inside the sandbox (seccomp: EACCES; bubblewrap: its own empty loopback), not a timeout.
    assert result.stdout.startswith("blocked"), result.stdout
    assert_nothing_reached([listener])


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


@local
def test_other_processes_secrets_are_unreachable(clean_after: Isolation) -> None:
    secret = f"proc-secret-{uuid.uuid4().hex}"
    env = {"PATH": "/usr/bin:/bin", "PLANTED": secret}
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", secret], env=env)
    try:
        result = run_code(clean_after, "python3", _SCAN_PROC.replace("{secret}", secret))
    finally:
        victim.kill()
        victim.wait()
    found = result.stdout.strip()
    if clean_after.layers()["bwrap"]:
        assert found == "found []"  # private /proc: the host's processes do not exist in there
    else:
        # Without a pid namespace a command line is world-readable, but another uid's environment never is.
        assert "environ" not in found


@local
def test_writing_outside_the_work_dir_fails(clean_after: Isolation) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    targets = ["/usr/" + marker, "/etc/" + marker, "/" + marker, "/var/tmp/" + marker]
    code = f"for path in {targets!r}:\n    try:\n        open(path, 'w').write('x')\n"
    code += "        print('wrote', path)\n"
    code += "    except OSError:\n        pass\n"
    result = run_code(clean_after, "python3", code)
    assert result.reason is None
    for path in targets:
        assert not os.path.exists(path)
    assert "wrote /usr" not in result.stdout and "wrote /etc" not in result.stdout


@local
def test_symlink_planted_for_host_cleanup_spares_the_target(
    clean_after: Isolation, tmp_path_factory: pytest.TempPathFactory
) -> None:
    victim = tmp_path_factory.mktemp("victim")
    canary = victim / "canary.txt"
    canary.write_text("alive")
    os.chmod(victim, 0o777)  # even if the job could reach it, cleanup must not follow the link
    code = f"import os\nos.symlink({str(victim)!r}, 'escape')\nos.symlink({str(canary)!r}, 'canary-link')\n"
    code += "print('planted')"
    result = run_code(clean_after, "python3", code)
    assert result.stdout == "planted\n"
    assert canary.read_text() == "alive"


@local
def test_the_cleanliness_check_sees_what_a_job_could_leave(
    full_isolation: Isolation, lambda_like_isolation: Isolation
) -> None:
    """`clean_after` spares only the pools' idle prepared sandboxes: a slot uid's process, a cgroup or a work
    dir of no prepared sandbox fails it (with a prepared sandbox in each pool while it looks)."""
    for iso in (full_isolation, lambda_like_isolation):
        assert run_code(iso, "python3", "print(1)").stdout == "1\n"
    assert_host_clean(full_isolation)
    stray = subprocess.Popen(["/usr/bin/sleep", "60"], user=UID_BASE + SLOTS - 1)
    try:
        with pytest.raises(AssertionError):
            assert_host_clean(full_isolation)
    finally:
        stray.kill()
        stray.wait()
    settings = full_isolation.settings
    for leftover in (
        os.path.join(settings.cgroup_root, "pids", settings.cgroup_name, f"slot-{UID_BASE + SLOTS}"),
        os.path.join(settings.work_root, f"slot-{SLOTS}"),
    ):
        os.makedirs(leftover)
        try:
            with pytest.raises(AssertionError):
                assert_host_clean(full_isolation)
        finally:
            os.rmdir(leftover)
    assert_host_clean(full_isolation)


# -- the Lambda and Fargate emulations ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def cloud_listeners() -> Iterator[list[socket.socket]]:
    opened = loopback_listeners()
    yield opened
    for server in opened:
        server.close()


def _applicable(emulated: Emulated, function: str) -> list[Attack]:
    layers = emulated.sandboxes[function].offer().layers
    return [attack for attack in ATTACKS if not attack.needs or layers.get(attack.needs)]


@pytest.fixture(scope="session")
def lambda_report(emulated: Emulated, cloud_listeners: list[socket.socket]) -> Report:
    runner = SyncRunner(emulated.sandboxes["sandbox"], "lambda")
    warm = SyncRunner(emulated.sandboxes["sandbox-warm"], "lambda")
    return run_suite(runner, _applicable(emulated, "sandbox"), PLANTED_SECRET, parallel=4, sequential=warm)


@pytest.fixture(scope="session")
def fargate_report(emulated: Emulated, cloud_listeners: list[socket.socket]) -> Report:
    runner = FargateRunner(emulated.fargate, emulated.events)
    return run_suite(runner, _applicable(emulated, "sandbox"), PLANTED_SECRET, parallel=4)


def _assert_contained(report: Report, name: str) -> None:
    if name not in report.verdicts:
        pytest.skip("only bounded by a layer this sandbox does not have (bubblewrap's size-limited tmpfs)")
    found, why = report.verdicts[name]
    assert found == "contained", (why, report.outcomes[name])


@cloud
@pytest.mark.parametrize("name", NAMES)
def test_attack_is_contained_in_the_lambda_emulation(lambda_report: Report, name: str) -> None:
    _assert_contained(lambda_report, name)


@cloud
@pytest.mark.parametrize("name", NAMES)
def test_attack_is_contained_in_the_fargate_emulation(fargate_report: Report, name: str) -> None:
    _assert_contained(fargate_report, name)


@cloud
def test_no_cloud_job_saw_the_planted_secret_or_reached_a_listener(
    lambda_report: Report, fargate_report: Report, cloud_listeners: list[socket.socket]
) -> None:
    for report in (lambda_report, fargate_report):
        assert not [text for text in report.outputs() if PLANTED_SECRET in text], report.runner
    assert_nothing_reached(cloud_listeners)


@cloud
def test_the_runtime_api_only_heard_the_handlers(emulated: Emulated, lambda_report: Report) -> None:
    for name in ("sandbox", "sandbox-warm"):
        for env in emulated.function(name).environments:
            rejected = [post for post in env.posts if not post[2]]
            assert rejected == [], (name, env.uid, rejected)  # nothing posted for an invocation but its handler
            assert len(env.posts) == env.invocations


def _describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/stat") as stat:
            return f"{cmdline.read()[:200]!r} {stat.read().rsplit(')', 1)[1].split()[:2]}"
    except OSError:
        return "gone"


def _argv(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")
    except OSError:
        return None  # gone since listed


def _is_prepared_sandbox(pid: int, pids: list[int]) -> bool:
    """Whether `pid` belongs to a prepared sandbox no job has reached: its stub (which execs a job's program
    when one arrives), or the supervisor of such a stub."""
    from chalicelib.sandbox.local import stub_source

    argv = _argv(pid)
    if argv is None:
        return True
    if argv[1:5] == [b"-I", b"-S", b"-c", stub_source().encode()]:
        return True
    children = [child for child in pids if child != pid and _parent(child) == pid]
    return (
        argv[3:4] != []
        and argv[3].endswith(b"supervisor.py")
        and children != []
        and all(_is_prepared_sandbox(child, []) for child in children)
    )


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


@cloud
def test_nothing_of_a_job_outlives_it(emulated: Emulated, lambda_report: Report, fargate_report: Report) -> None:
    for function in (emulated.function("sandbox"), emulated.function("sandbox-warm")):
        for env in function.environments:
            if not env.dead.is_set():
                assert env.container.proc is not None
                left = [(pid, _describe(pid)) for pid in hostclean.pids_of_uid(env.uid)]
                others = [pid for pid, _ in left if pid != env.container.proc.pid]
                # the runtime, and the environment's prepared sandbox (stubs waiting for a job), nothing else
                assert [pid for pid in others if not _is_prepared_sandbox(pid, others)] == [], left
    assert emulated.fargate_emulator.running == {}
    for uid in emulated.fargate_emulator.uids_used:
        # A task's uid has no process once its task stopped (unless another run leased the uid since).
        with hostclean.SlotPool(1, key_base=uid).slot():
            assert hostclean.pids_of_uid(uid) == [], uid


@cloud
def test_every_listed_prctl_refused_makes_the_lambda_sandbox_refuse(emulated: Emulated) -> None:
    report = run_suite(SyncRunner(emulated.sandboxes["sandbox-deny-all"]), ATTACKS, PLANTED_SECRET, parallel=2)
    for name, (found, why) in report.verdicts.items():
        assert found == "refused", (name, found, why)
        assert "non-dumpable" in why or "PR_SET_NO_NEW_PRIVS is refused" in why, why
    offer = emulated.sandboxes["sandbox-deny-all"].offer()
    assert not offer.usable and offer.refusal


@cloud
def test_a_handler_that_stays_dumpable_refuses(emulated: Emulated) -> None:
    [outcome] = run_attack(SyncRunner(emulated.sandboxes["sandbox-deny-dumpable"]), ATTACKS[0])
    assert outcome.status == "refused" and "cannot make itself non-dumpable" in outcome.detail, outcome


@cloud
def test_the_refusals_reported_in_lambda_still_contain_every_attack(
    emulated: Emulated, cloud_listeners: list[socket.socket]
) -> None:
    sandbox = emulated.sandboxes["sandbox-lambda-policy"]
    layers = sandbox.offer().layers
    assert (layers["subreaper"], layers["pdeathsig"], layers["reaping"]) == (False, False, "uid-scan")
    assert (layers["network"], layers["handler_non_dumpable"], layers["bwrap"]) == ("seccomp", True, False)
    report = run_suite(SyncRunner(sandbox), _applicable(emulated, "sandbox-lambda-policy"), PLANTED_SECRET, 4)
    for name, (found, why) in report.verdicts.items():
        assert found == "contained", (name, why, report.outcomes[name])
    assert not [text for text in report.outputs() if PLANTED_SECRET in text]
    assert_nothing_reached(cloud_listeners)


@cloud
def test_one_warm_lambda_environment_runs_consecutive_jobs_as_one(emulated: Emulated) -> None:
    """Consecutive jobs land in one warm environment (so the suite's follow-ups ran where their attack did)."""
    function = emulated.function("sandbox-warm")
    before = {env.uid: env.invocations for env in function.environments}
    for _ in range(3):
        run_attack(SyncRunner(emulated.sandboxes["sandbox-warm"]), ATTACKS[-1])
    grew = [env for env in function.environments if env.invocations != before.get(env.uid, 0)]
    assert len(grew) == 1 and not grew[0].dead.is_set()


@cloud
def test_a_normal_job_in_each_emulation(emulated: Emulated) -> None:
    for runner in (SyncRunner(emulated.sandboxes["sandbox"]), FargateRunner(emulated.fargate, emulated.events)):
        [outcome] = run_attack(runner, Attack("hello", "python3", "print(input())", lambda _: None, stdin="hi"))
        assert (outcome.status, outcome.stdout) == ("ran", "hi\n"), outcome
