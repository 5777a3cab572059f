"""Local isolation: the layers of DESIGN.md section 6, probed once, applied to every run on this host.

Layers: a supervisor process per job (child subreaper), allow-listed environment, fresh work dir, non-root
slot uid, rlimits, bubblewrap namespaces, seccomp deny-list, cgroup v1 memory + pids. A missing layer is
logged and skipped, except where a guarantee would go with it; runs are then refused, saying why:
- the network: only bubblewrap's network namespace or our seccomp filter cut it, nothing is taken on trust;
- root: user code never runs as root;
- reaping: a job's detached processes must be found and killed (slot uid, pid namespace, subreaper, or,
  with one job per uid, a scan of our uid's processes started after the job).
The same isolation runs in Lambda and Fargate (no uid switch, no cgroups, no bubblewrap in Lambda), where
the platform's own seccomp policy may refuse some prctl calls: the probe asks a throwaway supervisor.
"""

from __future__ import annotations

import functools
import logging
import marshal
import os
import posixpath
import resource
import socket
import subprocess
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel

from chalicelib.sandbox import bwrap, hostclean, kernel
from chalicelib.sandbox.cgroups import CgroupRoot, JobCgroup
from chalicelib.sandbox.grading import RawOutcome
from chalicelib.sandbox.models import SandboxLimits, SandboxRefused, SandboxUnavailable, SourceFile
from chalicelib.sandbox.process import LaunchSpec, NotStarted, Supervisor, memfd, probe_kernel, run_supervised
from chalicelib.sandbox.runtimes import _system_python
from chalicelib.sandbox.seccomp_filter import compiled_filter

if TYPE_CHECKING:
    from chalicelib.sandbox.pool import SandboxPool

logger = logging.getLogger(__name__)

_PATH = "/usr/local/bin:/usr/bin:/bin"
_BWRAP_TASKS = 4  # bubblewrap's own processes count against RLIMIT_NPROC and pids.max


class IsolationSettings(BaseModel):
    """Which layers to use; each is still only used when its probe succeeds."""

    use_bwrap: bool = True
    use_seccomp: bool = True
    use_cgroups: bool = True
    switch_uid: bool = True
    slots: int = 8
    slot_uid_base: int = 64000
    work_root: str = "/tmp/code-runner-work"
    lock_dir: str = "/tmp/code-runner-slot-locks"  # host-wide slot locks
    cgroup_root: str = "/sys/fs/cgroup"
    cgroup_name: str = "code-runner"
    tmpfs_mb: int = 64  # size of the sandbox's /work and /tmp each (bubblewrap only)
    sandbox: str = "local"  # which sandbox this isolation serves (named in a refusal)
    # Prepared sandboxes kept ready (pool.py); 0 starts every run from nothing. Each holds a slot.
    pool_size: int = 0
    # A pool never takes the host's last free slot (other workers' runs must not wait on idle sandboxes);
    # off where one worker owns every slot (a Lambda or Fargate environment).
    pool_keeps_a_slot_free: bool = True
    # Tear down used sandboxes and refill in a background thread (off: `SandboxPool.refill` is called).
    pool_refills_in_background: bool = True


@dataclass
class PreparedJob:
    """A request resolved to argv; argv[0] is absolute, the entry file relative to the work dir."""

    job_id: str
    argv: list[str]
    files: list[SourceFile]
    stdin: bytes
    limits: SandboxLimits
    address_space_extra_mb: int


class Isolation:
    """Runs prepared jobs under every available layer; one instance per worker process."""

    def __init__(self, settings: IsolationSettings | None = None) -> None:
        s = self.settings = settings or IsolationSettings()
        self.slots = hostclean.SlotPool(s.slots, key_base=s.slot_uid_base, lock_dir=s.lock_dir)
        self.cgroups = CgroupRoot(s.cgroup_root, s.cgroup_name)
        self._probe_lock = threading.Lock()
        self._layers: dict[str, bool | str] | None = None
        self._pool: SandboxPool | None = None

    def layers(self) -> dict[str, bool | str]:
        """Probe each layer once (thread-safe), log the outcome, return name -> on/off (or detail)."""
        with self._probe_lock:
            if self._layers is None:
                self._layers = self._probe()
                logger.info("sandbox layers: %s", self._layers)
            return self._layers

    def _probe(self) -> dict[str, bool | str]:
        s = self.settings
        root = os.geteuid() == 0
        switch = root and s.switch_uid
        calls = probe_kernel(compiled_filter())
        # Never start bubblewrap as root: it would keep host uid 0 inside. Nor where PR_SET_PDEATHSIG is
        # refused: bubblewrap's own processes use it, and hang rather than fail without it.
        sandbox = s.use_bwrap and (switch or not root) and calls["pdeathsig"] and self._probe_bwrap(switch)
        # bubblewrap loads the filter with prctl(PR_SET_SECCOMP); our supervisor also knows seccomp().
        seccomp = s.use_seccomp and (calls["seccomp_prctl"] or (not sandbox and calls["seccomp_syscall"]))
        cgroups = s.use_cgroups and root and self.cgroups.probe()
        reaping = _reaping(switch, sandbox, calls["subreaper"], s.slots)
        return {
            "subreaper": calls["subreaper"],
            "pdeathsig": calls["pdeathsig"],
            "no_new_privs": calls["no_new_privs"],
            "dumpable": calls["dumpable"],
            "seccomp_loadable": calls["seccomp_prctl"] or calls["seccomp_syscall"],
            "env_allowlist": True,
            "fresh_workdir": True,
            "non_root": switch or not root,
            "uid_switch": switch,
            "rlimits": True,
            "bwrap": sandbox,
            "seccomp": seccomp,
            "cgroups": cgroups,
            "network": "bwrap-netns" if sandbox else "seccomp" if seccomp else False,
            "reaping": reaping,
        }

    def _probe_bwrap(self, switch: bool) -> bool:
        exe = bwrap.bwrap_path()
        if exe is None:
            return False
        argv = bwrap.sandbox_argv(["/bin/true"], {"PATH": _PATH}, [], 1 << 20, None)
        try:
            # As a slot's uid, holding the slot: another process's run in that slot kills every process of it.
            with self.slots.slot() as held:
                uid = self.settings.slot_uid_base + held.number if switch else None
                done = subprocess.run(
                    argv, capture_output=True, timeout=20, user=uid, group=uid, extra_groups=[] if uid else None
                )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("bubblewrap layer off: %s", exc)
            return False
        if done.returncode != 0:
            logger.warning("bubblewrap layer off: %s", done.stderr.decode("utf-8", "replace").strip())
        return done.returncode == 0

    @property
    def pool(self) -> SandboxPool | None:
        """The prepared sandboxes (None with `pool_size` 0); nothing is prepared before the first run."""
        if self._pool is None and self.settings.pool_size > 0:
            from chalicelib.sandbox.pool import SandboxPool

            with self._probe_lock:
                if self._pool is None:
                    self._pool = SandboxPool(self)
        return self._pool

    def run(self, job: PreparedJob, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
        """Run `job` once with `stdin` in a free slot, then leave nothing of it behind.

        In a prepared sandbox when the pool has one ready (or about to be), else started from nothing.
        """
        layers = self.layers()
        refusal = refusal_reason(layers)
        if refusal is not None:
            raise SandboxRefused(self.settings.sandbox, refusal)
        pool = self.pool
        prepared = pool.take() if pool is not None else None
        if pool is not None and prepared is not None:
            try:
                return prepared.serve(job, stdin, cancel)
            except NotStarted as exc:  # it broke after its health check; the job never reached it
                logger.warning("a prepared sandbox broke before its job, starting one: %s", exc)
                pool.stats["not_started"] += 1
            finally:
                pool.retire(prepared)
        with self.slots.slot() as held:
            slot = SlotRun(self, held, layers)
            try:
                return slot.run(job, stdin, cancel)
            finally:
                slot.cleanup()


def _reaping(switch: bool, sandbox: bool, subreaper: bool, slots: int) -> str | bool:
    """How a job's detached processes (double-forked daemons) are found and killed, or False."""
    if switch:
        return "slot-uid"  # kill(-1) as the slot uid
    if sandbox:
        return "pid-namespace"  # they die with bubblewrap's pid namespace
    if subreaper:
        return "subreaper"  # they re-parent to the supervisor
    # Every process of our uid started after the job is the job's, if no other job shares the uid.
    return "uid-scan" if slots == 1 else False


def refusal_reason(layers: dict[str, bool | str]) -> str | None:
    """Why no run may start with these layers, or None when every guarantee holds."""
    if not layers["network"]:
        why = "it is disabled"
        if not layers["no_new_privs"]:
            why = "PR_SET_NO_NEW_PRIVS is refused"
        elif not layers["seccomp_loadable"]:
            why = "prctl(PR_SET_SECCOMP) and seccomp() are refused"
        return f"no layer can cut the network: no bubblewrap network namespace, and no seccomp filter ({why})"
    if not layers["non_root"]:
        return "refusing to run user code as root: uid switching is disabled"
    if not layers["reaping"]:
        return (
            "no way to end a job's detached processes: no uid of its own, no pid namespace, "
            "PR_SET_CHILD_SUBREAPER refused, and other slots share the uid"
        )
    return None


class SlotRun:
    """One sandbox in one slot: set up, started (directly, or prepared for a job to come), cleaned up."""

    def __init__(self, isolation: Isolation, held: hostclean.HeldSlot, layers: dict[str, bool | str]) -> None:
        self.settings = isolation.settings
        self.cgroup_root = isolation.cgroups
        self.layers = layers
        self.held = held
        self.uid = self.settings.slot_uid_base + held.number if layers["uid_switch"] else None
        self.workdir = os.path.join(self.settings.work_root, f"slot-{held.number}")
        # Named by slot, not by job: a group left by a worker killed mid-run is found and replaced by the
        # next run in the slot, so at most one group per slot can ever be left behind.
        self.cgroup_name = f"slot-{self.settings.slot_uid_base + held.number}"
        self.cgroup: JobCgroup | None = None
        self.fds: list[int] = []
        self.since = kernel.now_ticks()  # the job's processes, if they must be found by start time
        self.use_bwrap = bool(layers["bwrap"])
        self.tmpfs = self.settings.tmpfs_mb << 20

    def run(self, job: PreparedJob, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
        """Start `job` directly in this slot and wait for it (the caller cleans up)."""
        try:
            self._setup(job.limits.memory_mb, job.limits.processes + _BWRAP_TASKS)
            raw = run_supervised(self._direct_spec(job), stdin, cancel)
            raw.memory_hit = self.memory_hit()
            return raw
        except OSError as exc:
            raise SandboxUnavailable(f"sandbox setup failed: {exc}") from exc

    def prepare(self) -> Supervisor:
        """Start a prepared sandbox in this slot: supervisor, namespaces, seccomp and stub, but no job."""
        try:
            self._setup(None, None)
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            with ours, theirs:  # only the supervisor and the stub keep an end: each sees the other go
                return Supervisor(self._stub_spec((ours.fileno(), theirs.fileno())), stdin=None)
        except OSError as exc:
            raise SandboxUnavailable(f"sandbox setup failed: {exc}") from exc

    def limit(self, job: PreparedJob) -> None:
        """Give the slot's cgroup the job's limits (a prepared sandbox's group has none until then)."""
        if self.cgroup is not None:
            self.cgroup.set_limits(job.limits.memory_mb, job.limits.processes + _BWRAP_TASKS)

    def memory_hit(self) -> bool:
        return self.cgroup is not None and self.cgroup.memory_hit()

    def _setup(self, memory_mb: int | None, tasks: int | None) -> None:
        if self.uid is not None:
            hostclean.kill_uid(self.uid)  # whatever a crashed predecessor in this slot left running
        if self.layers["cgroups"]:
            self.cgroup = JobCgroup.fresh(self.cgroup_root, self.cgroup_name, memory_mb, tasks)
        if not self.use_bwrap:
            # Slot uids may traverse the root to reach their own dir, but not list it or create in it.
            os.makedirs(self.settings.work_root, exist_ok=True)
            os.chmod(self.settings.work_root, 0o711)
            hostclean.fresh_dir(self.workdir, self.uid, self.uid)

    def _env(self) -> dict[str, str]:
        home = bwrap.SANDBOX_WORKDIR if self.use_bwrap else self.workdir
        env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": home}
        if not self.use_bwrap:
            env["TMPDIR"] = home
        return env

    def _direct_spec(self, job: PreparedJob) -> LaunchSpec:
        if self.use_bwrap:
            files = [(self._memfd("src", f.content.encode()), f.path) for f in job.files]
            return self._spec(job.argv, files, job.limits, self._rlimits(job))
        self._write_files(job.files)
        return self._spec(job.argv, [], job.limits, self._rlimits(job))

    def _stub_spec(self, stub_fds: tuple[int, int]) -> LaunchSpec:
        stub = [_system_python(), "-I", "-S", "-c", stub_source(), str(stub_fds[1])]
        if self.uid is None:  # other jobs may share our uid: no one may read the waiting stub
            stub.append("harden")
        # Wall time and output cap come with the job; until then the stub is ours and waits.
        spec = self._spec(stub, [], None, {})
        spec.stub_fds = stub_fds
        return spec

    def _spec(
        self,
        inner: list[str],
        files: list[tuple[int, str]],
        limits: SandboxLimits | None,
        rlimits: dict[str, tuple[int, int]],
    ) -> LaunchSpec:
        program = compiled_filter() if self.layers["seccomp"] else None
        env = self._env()
        if self.use_bwrap:
            seccomp_fd = self._memfd("seccomp", program) if program else None
            argv, cwd, seccomp_hex = bwrap.sandbox_argv(inner, env, files, self.tmpfs, seccomp_fd), "/", ""
        else:
            argv, cwd, seccomp_hex = inner, self.workdir, (program or b"").hex()
        return LaunchSpec(
            argv=argv,
            env={} if self.use_bwrap else env,  # bubblewrap sets the job's env itself (--clearenv)
            cwd=cwd,
            wall_time_s=limits.wall_time_s if limits else 0,
            output_bytes=limits.output_kb * 1024 if limits else 0,
            uid=self.uid,
            gid=self.uid,
            rlimits=rlimits,
            cgroup_procs=self.cgroup.procs_files if self.cgroup else [],
            seccomp_hex=seccomp_hex,
            exit_over_128_is_signal=self.use_bwrap,
            pass_fds=tuple(self.fds),
            slot_lock_fd=self.held.lock_fd,
            pid_namespace=self.use_bwrap,
            scan_allowed=self.uid is None and self.settings.slots == 1,
        )

    def stub_job(self, job: PreparedJob) -> bytes:
        """What a prepared sandbox's stub needs to become `job` (stub.py), as marshal."""
        rlimits = [(getattr(resource, name), soft, hard) for name, (soft, hard) in self._rlimits(job).items()]
        files = [(posixpath.normpath(f.path), f.content.encode()) for f in job.files]
        # bubblewrap writes files 0666 and directories 0755 whatever the umask; without it they are written
        # like any file of ours (0666 and 0777 less the umask).
        modes = {"file_mode": 0o666, "dir_mode": 0o755 if self.use_bwrap else None}
        return marshal.dumps({"argv": job.argv, "files": files, "rlimits": rlimits, **modes})

    def _rlimits(self, job: PreparedJob) -> dict[str, tuple[int, int]]:
        limits = job.limits
        cpu = max(1, int(limits.cpu_time_s + 0.999))
        # RLIMIT_NPROC counts every task of the real uid; without a uid of our own that includes ourselves.
        tasks = limits.processes + (
            _BWRAP_TASKS if self.use_bwrap else _tasks_of_uid(os.getuid()) if self.uid is None else 0
        )
        address_space = (limits.memory_mb + job.address_space_extra_mb) << 20
        return {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU first, SIGKILL a second later if it is ignored
            "RLIMIT_NPROC": (tasks, tasks),
            "RLIMIT_FSIZE": (self.tmpfs, self.tmpfs),
            "RLIMIT_NOFILE": (256, 256),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_AS": (address_space, address_space),
        }

    def _memfd(self, name: str, content: bytes) -> int:
        fd = memfd(name, content)
        self.fds.append(fd)
        return fd

    def _write_files(self, files: list[SourceFile]) -> None:
        for source in files:
            target = os.path.join(self.workdir, source.path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(source.content)
        if self.uid is not None:
            for dirpath, dirnames, filenames in os.walk(self.workdir):
                for name in dirnames + filenames:
                    os.chown(os.path.join(dirpath, name), self.uid, self.uid, follow_symlinks=False)

    def cleanup(self) -> None:
        """Kill whatever of the sandbox is left, remove its cgroup and files (the caller frees the slot)."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.uid is not None and hostclean.kill_uid(self.uid):
            logger.error("processes of uid %s survived cleanup", self.uid)
        if self.layers["reaping"] == "uid-scan":  # e.g. the job killed its same-uid supervisor
            spare, uid = kernel.self_and_ancestors(), os.getuid()
            if kernel.kill_until_gone(lambda: kernel.started_since(uid, self.since, spare)):
                logger.error("processes of the job survived cleanup")
        if self.cgroup is not None:
            self.cgroup.remove()
        hostclean.remove_tree(self.workdir)
        if self.uid is not None and not self.use_bwrap:
            hostclean.sweep_shared_tmp(self.uid)


@functools.cache
def stub_source() -> str:
    """stub.py's source, run with `python -I -S -c` (inside bubblewrap our files are not there to run)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub.py"), encoding="utf-8") as handle:
        return handle.read()


def _tasks_of_uid(uid: int) -> int:
    count = 0
    for pid in hostclean.pids_of_uid(uid):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


@functools.cache
def worker_isolation(pool_size: int) -> Isolation:
    """The worker's local isolation with every layer it can get and `pool_size` prepared sandboxes (built once
    per process, probed once)."""
    return Isolation(IsolationSettings(pool_size=pool_size))


def default_isolation() -> Isolation:
    """The local isolation without prepared sandboxes (each run starts its own)."""
    return worker_isolation(0)


def probe_layers() -> dict[str, bool | str]:
    """Layer name -> whether the local sandbox uses it here (for /health and /v1/runtimes)."""
    return default_isolation().layers()
