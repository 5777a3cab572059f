"""Local isolation: the layers of DESIGN.md section 6, probed once, applied to every run on this host.

Layers: a supervisor process per job (child subreaper), allow-listed environment, fresh work dir, non-root
slot uid, rlimits, bubblewrap namespaces, seccomp deny-list, cgroup v1 memory + pids. A missing layer is
logged and skipped, except the network: with no layer able to cut it, runs are refused.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import threading
from dataclasses import dataclass

from pydantic import BaseModel

from chalicelib.sandbox import bwrap, hostclean
from chalicelib.sandbox.cgroups import CgroupRoot, JobCgroup
from chalicelib.sandbox.grading import RawOutcome
from chalicelib.sandbox.models import SandboxLimits, SandboxUnavailable, SourceFile
from chalicelib.sandbox.process import LaunchSpec, run_supervised
from chalicelib.sandbox.seccomp_filter import compiled_filter

logger = logging.getLogger(__name__)

_PATH = "/usr/local/bin:/usr/bin:/bin"
_BWRAP_TASKS = 4  # bubblewrap's own processes count against RLIMIT_NPROC and pids.max


class IsolationSettings(BaseModel):
    """Which layers to use; each is still only used when its probe succeeds."""

    use_bwrap: bool = True
    use_seccomp: bool = True
    use_cgroups: bool = True
    switch_uid: bool = True
    network_isolated_by_platform: bool = False  # e.g. Lambda in a VPC without egress
    slots: int = 8
    slot_uid_base: int = 64000
    work_root: str = "/tmp/code-runner-work"
    cgroup_root: str = "/sys/fs/cgroup"
    cgroup_name: str = "code-runner"
    tmpfs_mb: int = 64  # size of the sandbox's /work and /tmp each (bubblewrap only)


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
        self.settings = settings or IsolationSettings()
        self._pool = hostclean.SlotPool(self.settings.slots, key_base=self.settings.slot_uid_base)
        self._cgroups = CgroupRoot(self.settings.cgroup_root, self.settings.cgroup_name)
        self._probe_lock = threading.Lock()
        self._layers: dict[str, bool | str] | None = None

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
        seccomp = s.use_seccomp and compiled_filter() is not None
        # Never start bubblewrap as root: it would keep host uid 0 inside.
        sandbox = s.use_bwrap and (switch or not root) and self._probe_bwrap(switch)
        cgroups = s.use_cgroups and root and self._cgroups.probe()
        network: bool | str = (
            "bwrap-netns"
            if sandbox
            else "seccomp"
            if seccomp
            else "platform"
            if s.network_isolated_by_platform
            else False
        )
        return {
            "supervisor_subreaper": True,
            "env_allowlist": True,
            "fresh_workdir": True,
            "non_root": switch or not root,
            "uid_switch": switch,
            "rlimits": True,
            "bwrap": sandbox,
            "seccomp": seccomp,
            "cgroups": cgroups,
            "network": network,
        }

    def _probe_bwrap(self, switch: bool) -> bool:
        exe = bwrap.bwrap_path()
        if exe is None:
            return False
        uid = self.settings.slot_uid_base if switch else None
        argv = bwrap.sandbox_argv(["/bin/true"], {"PATH": _PATH}, [], 1 << 20, None)
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=20, user=uid, group=uid, extra_groups=[] if uid else None
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("bubblewrap layer off: %s", exc)
            return False
        if done.returncode != 0:
            logger.warning("bubblewrap layer off: %s", done.stderr.decode("utf-8", "replace").strip())
        return done.returncode == 0

    def run(self, job: PreparedJob, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
        """Run `job` once with `stdin` in a free slot, then leave nothing of it behind."""
        layers = self.layers()
        if not layers["network"]:
            raise SandboxUnavailable("no isolation layer can cut the network (no bubblewrap, no seccomp)")
        if not layers["non_root"]:
            raise SandboxUnavailable("refusing to run user code as root: uid switching is disabled")
        with self._pool.slot() as held:
            return _SlotRun(self, held, layers).run(job, stdin, cancel)


class _SlotRun:
    """One run in one slot: set up, start, then clean up whatever happened."""

    def __init__(self, isolation: Isolation, held: hostclean.HeldSlot, layers: dict[str, bool | str]) -> None:
        self.settings = isolation.settings
        self.cgroup_root = isolation._cgroups
        self.layers = layers
        self.lock_fd = held.lock_fd
        self.uid = self.settings.slot_uid_base + held.number if layers["uid_switch"] else None
        self.workdir = os.path.join(self.settings.work_root, f"slot-{held.number}")
        # Named by slot, not by job: a group left by a worker killed mid-run is found and replaced by the
        # next run in the slot, so at most one group per slot can ever be left behind.
        self.cgroup_name = f"slot-{self.settings.slot_uid_base + held.number}"
        self.fds: list[int] = []

    def run(self, job: PreparedJob, stdin: bytes, cancel: threading.Event | None) -> RawOutcome:
        cgroup = None
        try:
            if self.uid is not None:
                hostclean.kill_uid(self.uid)  # whatever a crashed predecessor in this slot left running
            if self.layers["cgroups"]:
                tasks = job.limits.processes + _BWRAP_TASKS
                cgroup = JobCgroup.fresh(self.cgroup_root, self.cgroup_name, job.limits.memory_mb, tasks)
            spec = self._spec(job, cgroup)
            raw = run_supervised(spec, stdin, cancel)
            if cgroup is not None:
                raw.memory_hit = cgroup.memory_hit()
            return raw
        except OSError as exc:
            raise SandboxUnavailable(f"sandbox setup failed: {exc}") from exc
        finally:
            self._cleanup(cgroup)

    def _spec(self, job: PreparedJob, cgroup: JobCgroup | None) -> LaunchSpec:
        limits = job.limits
        program = compiled_filter() if self.layers["seccomp"] else None
        use_bwrap = bool(self.layers["bwrap"])
        home = bwrap.SANDBOX_WORKDIR if use_bwrap else self.workdir
        env = {"PATH": _PATH, "LANG": "C.UTF-8", "HOME": home}
        tmpfs = self.settings.tmpfs_mb << 20
        if use_bwrap:
            seccomp_fd = self._memfd("seccomp", program) if program else None
            files = [(self._memfd("src", f.content.encode()), f.path) for f in job.files]
            argv, cwd, seccomp_hex = bwrap.sandbox_argv(job.argv, env, files, tmpfs, seccomp_fd), "/", ""
        else:
            env["TMPDIR"] = home
            self._write_files(job.files)
            argv, cwd, seccomp_hex = job.argv, self.workdir, (program or b"").hex()
        return LaunchSpec(
            argv=argv,
            env={} if use_bwrap else env,  # bubblewrap sets the job's env itself (--clearenv)
            cwd=cwd,
            wall_time_s=limits.wall_time_s,
            output_bytes=limits.output_kb * 1024,
            uid=self.uid,
            gid=self.uid,
            rlimits=self._rlimits(job, use_bwrap, tmpfs),
            cgroup_procs=cgroup.procs_files if cgroup else [],
            seccomp_hex=seccomp_hex,
            exit_over_128_is_signal=use_bwrap,
            pass_fds=tuple(self.fds),
            slot_lock_fd=self.lock_fd,
        )

    def _rlimits(self, job: PreparedJob, use_bwrap: bool, tmpfs: int) -> dict[str, tuple[int, int]]:
        limits = job.limits
        cpu = max(1, int(limits.cpu_time_s + 0.999))
        # RLIMIT_NPROC counts every task of the real uid; without a uid of our own that includes ourselves.
        tasks = limits.processes + (
            _BWRAP_TASKS if use_bwrap else _tasks_of_uid(os.getuid()) if self.uid is None else 0
        )
        address_space = (limits.memory_mb + job.address_space_extra_mb) << 20
        return {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU first, SIGKILL a second later if it is ignored
            "RLIMIT_NPROC": (tasks, tasks),
            "RLIMIT_FSIZE": (tmpfs, tmpfs),
            "RLIMIT_NOFILE": (256, 256),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_AS": (address_space, address_space),
        }

    def _memfd(self, name: str, content: bytes) -> int:
        fd = os.memfd_create(name)
        self.fds.append(fd)
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def _write_files(self, files: list[SourceFile]) -> None:
        # Slot uids may traverse the root to reach their own dir, but not list it or create in it.
        os.makedirs(self.settings.work_root, exist_ok=True)
        os.chmod(self.settings.work_root, 0o711)
        hostclean.fresh_dir(self.workdir, self.uid, self.uid)
        for source in files:
            target = os.path.join(self.workdir, source.path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(source.content)
        if self.uid is not None:
            for dirpath, dirnames, filenames in os.walk(self.workdir):
                for name in dirnames + filenames:
                    os.chown(os.path.join(dirpath, name), self.uid, self.uid, follow_symlinks=False)

    def _cleanup(self, cgroup: JobCgroup | None) -> None:
        for fd in self.fds:
            os.close(fd)
        if self.uid is not None and hostclean.kill_uid(self.uid):
            logger.error("processes of uid %s survived cleanup", self.uid)
        if cgroup is not None:
            cgroup.remove()
        hostclean.remove_tree(self.workdir)
        if self.uid is not None and not self.layers["bwrap"]:
            hostclean.sweep_shared_tmp(self.uid)


def _tasks_of_uid(uid: int) -> int:
    count = 0
    for pid in hostclean.pids_of_uid(uid):
        try:
            count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return count


@functools.cache
def default_isolation() -> Isolation:
    """The worker's local isolation with every layer it can get (built once per process, probed once)."""
    return Isolation()


def probe_layers() -> dict[str, bool | str]:
    """Layer name -> whether the local sandbox uses it here (for /health and /v1/runtimes)."""
    return default_isolation().layers()
