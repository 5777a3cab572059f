"""What the Lambda handler and the Fargate entry do to themselves before any user code starts.

There, the user's program runs as the same uid as the process that launched it, so without this it could:
- read that process's environment through `/proc/<pid>/environ` (the function role's AWS credentials in
  Lambda, the result key and URLs in Fargate) and its memory through `/proc/<pid>/mem` (the result key);
- read the same through the memory that `/proc/<pid>/environ` shows even after `os.environ` forgot a variable:
  the kernel shows the process's initial environment block, between `env_start` and `env_end` of
  `/proc/<pid>/stat`, which `unsetenv` never touches.

So the process (1) drops the secrets from `os.environ` (children only ever get an allow-listed environment,
but nothing should hold them), (2) overwrites its whole initial environment block with zeros, and (3) makes
itself non-dumpable (`PR_SET_DUMPABLE` 0): its `/proc/<pid>` files then belong to root and a same-uid
process can read neither its environ nor its memory, nor attach to it. Each step is reported; a caller that
cannot make itself non-dumpable must refuse to run user code (its memory holds the result key).

Standard library only. Only call `harden` in the process that will run the user's code (Lambda, Fargate):
zeroing the environment block makes libc's `getenv` find nothing from then on (Python's `os.environ` is a
copy and keeps working).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from chalicelib.sandbox import kernel

# What the platform puts in a function's or a task's environment that is worth stealing.
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
)
# Indices of env_start and env_end among the fields of /proc/<pid>/stat that follow the command name (fields
# 50 and 51 of proc(5), counted from the state, field 3).
_ENV_START, _ENV_END = 50 - 3, 51 - 3


@dataclass(frozen=True)
class Guard:
    """What `harden` achieved."""

    non_dumpable: bool
    removed: list[str] = field(default_factory=list)
    environ_bytes_zeroed: int = 0

    def layers(self) -> dict[str, bool | str]:
        return {
            "handler_non_dumpable": self.non_dumpable,
            "credentials_removed": True,
            "initial_environ_zeroed": self.environ_bytes_zeroed > 0,
        }


def remove_variables(names: tuple[str, ...] | list[str]) -> list[str]:
    """Drop `names` from this process's environment; returns those that were set."""
    removed = [name for name in names if name in os.environ]
    for name in removed:
        os.environ.pop(name, None)
    return removed


def initial_environ_region() -> tuple[int, int]:
    """(env_start, env_end): where this process's initial environment block lives."""
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[_ENV_START]), int(fields[_ENV_END])


def zero_initial_environ() -> int:
    """Overwrite the initial environment block with zeros; returns how many bytes (0 if unknown)."""
    import ctypes

    start, end = initial_environ_region()
    if not start or end <= start:
        return 0
    ctypes.memset(start, 0, end - start)
    return end - start


def harden(secrets: tuple[str, ...] = ()) -> Guard:
    """Remove the credentials and `secrets` from the environment, zero the initial block, become non-dumpable."""
    removed = remove_variables(CREDENTIAL_VARIABLES + secrets)
    zeroed = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        zeroed = zero_initial_environ()
    return Guard(
        non_dumpable=kernel.allowed(kernel.PR_SET_DUMPABLE, 0),
        removed=removed,
        environ_bytes_zeroed=zeroed,
    )


def refusal(guard: Guard) -> str | None:
    """Why user code may not run after `guard`, or None."""
    if not guard.non_dumpable:
        return (
            "the process that starts jobs cannot make itself non-dumpable (prctl(PR_SET_DUMPABLE) is refused): the "
            "job, running as the same uid, could read its memory and the key that seals results"
        )
    return None
