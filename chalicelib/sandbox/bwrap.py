"""The bubblewrap command line: every namespace unshared, read-only system, size-limited tmpfs work dir."""

from __future__ import annotations

import os
import posixpath
import shutil

SANDBOX_WORKDIR = "/work"
# System paths the runtimes need, bound read-only; on merged-/usr systems the top-level ones are symlinks.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
)


def bwrap_path() -> str | None:
    """The bubblewrap executable, if installed."""
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin")


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        args += ["--ro-bind-try", path, path]
    return args


def sandbox_argv(
    inner: list[str],
    env: dict[str, str],
    files: list[tuple[int, str]],
    tmpfs_bytes: int,
    seccomp_fd: int | None,
) -> list[str]:
    """argv that runs `inner` in fresh namespaces with `files` (fd, relative path) copied into /work.

    --unshare-user is explicit because --disable-userns needs it (we never run bwrap as root, so the user
    namespace is always created); --new-session stops TIOCSTI; the root is remounted read-only last, so
    only the two size-limited tmpfs mounts (/work and /tmp) are writable.
    """
    exe = bwrap_path() or "bwrap"
    args = [exe, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"]
    args += _system_binds()
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(tmpfs_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    args += ["--size", str(tmpfs_bytes), "--tmpfs", SANDBOX_WORKDIR]
    made: set[str] = set()
    for fd, relative in files:
        target = posixpath.join(SANDBOX_WORKDIR, relative)
        parent = posixpath.dirname(target)
        missing: list[str] = []
        while parent != SANDBOX_WORKDIR and parent not in made:
            missing.append(parent)
            made.add(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            args += ["--dir", directory]
        args += ["--file", str(fd), target]
    args += ["--remount-ro", "/", "--chdir", SANDBOX_WORKDIR, "--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    return [*args, "--", *inner]
