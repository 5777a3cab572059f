"""The seccomp deny-list as a classic BPF program, assembled here in pure Python (no libseccomp).

Lambda's and Fargate's Python have no libseccomp binding, and a layer that silently turns itself off is a
hole: the program is built from the table below on any host, and checked against libseccomp by the tests.

What it does, in order:
- checks the ABI: x86_64 and aarch64 (little-endian) are filtered; any other ABI kills the process. That
  covers i386 through `int 0x80` and x32 through the x32 syscall bit on x86_64, whose numbers differ (i386
  reaches sockets through `socketcall`); none of our runtimes use them, and an errno would leave a process
  that cannot even exit under that ABI spinning until its CPU limit, where SIGSYS ends it at once;
- `DENIED_SYSCALLS` fail with EPERM;
- `socket()` of any family but AF_UNIX fails with EACCES: an allow-list, because families other than
  AF_INET/AF_INET6/AF_PACKET reach a network too (AF_VSOCK reaches Lambda's Firecracker host, AF_SMC falls
  back to TCP, AF_RDS and AF_TIPC have IP transports), and kernels keep adding families;
- `kill(-1, ...)` fails with EPERM (it would reach every process of our uid, a same-uid supervisor too);
- optionally, chosen `prctl` options fail with EPERM, and new namespaces are refused (`unshare`, `setns`,
  `clone` with a CLONE_NEW* flag: EPERM; `clone3`: ENOSYS, so libc falls back to `clone`, whose flags a
  filter can see): the Lambda and Fargate emulators (devtools/) imitate the platforms' own policies with it.

Each test is a block that falls through when it does not match, so no jump spans more than one block and
every jump offset stays far below the 255 a classic BPF jump can hold.
"""

from __future__ import annotations

import errno
import functools
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from chalicelib.sandbox import kernel
from chalicelib.sandbox.kernel import install_filter

__all__ = ["build_filter", "compiled_filter", "deny_prctl_filter", "install_filter", "platform_policy_filter"]

# Syscalls user code has no business making: debugging other processes, kernel and namespace control,
# keyrings, BPF, perf, io_uring (it bypasses per-syscall filtering, sockets included), cross-process memory
# access, and pidfd_getfd (it copies a socket out of another same-uid process).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root", "chroot",
    "unshare", "setns", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
    "swapon", "swapoff", "reboot", "acct", "quotactl", "syslog", "iopl", "ioperm", "settimeofday",
    "clock_settime", "clock_adjtime", "adjtimex", "fanotify_init", "mount_setattr", "fsopen", "fsmount",
    "move_mount", "open_tree", "pidfd_getfd",
)  # fmt: skip

AF_UNIX = 1
ALLOWED_SOCKET_FAMILIES = (AF_UNIX,)  # runtimes use it between their own processes; it reaches no network

# Syscall numbers: (x86_64, aarch64), from the kernel's unistd headers (asm/unistd_64.h and
# asm-generic/unistd.h); None where the arch has no such call. Cross-checked by the tests.
SYSCALLS: dict[str, tuple[int | None, int | None]] = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "chroot": (161, 51),
    "unshare": (272, 97), "setns": (308, 268), "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106), "bpf": (321, 280),
    "perf_event_open": (298, 241), "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "open_by_handle_at": (304, 265), "name_to_handle_at": (303, 264),
    "lookup_dcookie": (212, 18), "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142),
    "acct": (163, 89), "quotactl": (179, 60), "syslog": (103, 116), "iopl": (172, None), "ioperm": (173, None),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "clock_adjtime": (305, 266),
    "adjtimex": (159, 171), "fanotify_init": (300, 262), "mount_setattr": (442, 442), "fsopen": (430, 430),
    "fsmount": (432, 432), "move_mount": (429, 429), "open_tree": (428, 428), "pidfd_getfd": (438, 438),
    "socket": (41, 198), "kill": (62, 129), "prctl": (157, 167), "seccomp": (317, 277),
    "clone": (56, 220), "clone3": (435, 435),
}  # fmt: skip

# clone() flags that create a namespace: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


@dataclass(frozen=True)
class Arch:
    """An ABI the filter accepts: its AUDIT_ARCH value and its column in SYSCALLS."""

    name: str
    audit: int
    column: int
    foreign_from: int | None = None  # syscall numbers from here on belong to another ABI (x32)


ARCHES = (Arch("x86_64", 0xC000003E, 0, foreign_from=0x40000000), Arch("aarch64", 0xC00000B7, 1))

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS

# Classic BPF opcodes (linux/bpf_common.h) and the layout of struct seccomp_data.
LD_W_ABS, JMP_JA, JMP_JEQ_K, JMP_JGE_K, JMP_JSET_K, RET_K = 0x20, 0x05, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH, _ARGS = 0, 4, 16

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


@dataclass(frozen=True)
class Rule:
    """Make `syscall` fail with `errno`: always, or by the low 32 bits of argument `arg`.

    With `arg`, the call fails when the argument is one of `values`, or, with `unless=True`, when it is
    none of them, or, with `mask`, when it has any of the mask's bits set. Only the low 32 bits are
    compared: the arguments we test are C ints, and the kernel ignores their upper half, so comparing 64
    bits would let 0x1_0000_0002 through as AF_INET (clone's namespace flags are all in the low half).
    """

    syscall: str
    errno: int
    arg: int | None = None
    values: tuple[int, ...] = ()
    unless: bool = False
    mask: int = 0


def build_filter(
    denied_syscalls: Iterable[str] = (),
    *,
    allowed_socket_families: Collection[int] | None = None,
    deny_kill_all: bool = False,
    deny_prctl_options: Collection[int] = (),
    deny_namespaces: bool = False,
) -> bytes:
    """The program bytes (8 per instruction) for a filter that allows everything else.

    `allowed_socket_families=None` leaves socket() alone; an empty collection refuses every family.
    """
    rules = [Rule(name, errno.EPERM) for name in denied_syscalls]
    if deny_namespaces:
        rules += [Rule("clone3", errno.ENOSYS), Rule("clone", errno.EPERM, 0, mask=CLONE_NEW_FLAGS)]
        rules += [Rule(name, errno.EPERM) for name in ("unshare", "setns") if name not in denied_syscalls]
    if allowed_socket_families is not None:
        rules.append(Rule("socket", errno.EACCES, 0, tuple(allowed_socket_families), unless=True))
    if deny_kill_all:
        rules.append(Rule("kill", errno.EPERM, 0, (0xFFFFFFFF,)))
    if deny_prctl_options:
        rules.append(Rule("prctl", errno.EPERM, 0, tuple(deny_prctl_options)))
    return encode(assemble(rules))


@functools.cache
def compiled_filter() -> bytes:
    """The sandbox's filter (built once per process; about 1.7 KB)."""
    return build_filter(DENIED_SYSCALLS, allowed_socket_families=ALLOWED_SOCKET_FAMILIES, deny_kill_all=True)


def deny_prctl_filter(option_names: Iterable[str]) -> bytes:
    """A filter that only makes the named prctl options (e.g. "PR_SET_NAME") fail with EPERM.

    Naming PR_SET_SECCOMP refuses the seccomp() syscall as well: a platform that forbids installing a filter
    forbids it both ways, and our installer tries both.
    """
    return platform_policy_filter(option_names, deny_namespaces=False)


def platform_policy_filter(option_names: Iterable[str], *, deny_namespaces: bool = True) -> bytes:
    """A platform's own policy as the emulators impose it: the named prctl options refused (as in
    `deny_prctl_filter`) and, by default, no new namespaces (Lambda and Fargate allow none: no bubblewrap)."""
    names = list(option_names)
    unknown = [name for name in names if name not in kernel.PRCTL_OPTIONS]
    if unknown:
        raise ValueError(f"unknown prctl options {unknown}; known: {sorted(kernel.PRCTL_OPTIONS)}")
    denied = ("seccomp",) if "PR_SET_SECCOMP" in names else ()
    return build_filter(
        denied, deny_prctl_options=[kernel.PRCTL_OPTIONS[name] for name in names], deny_namespaces=deny_namespaces
    )


def assemble(rules: Sequence[Rule]) -> list[Instruction]:
    """Dispatch on seccomp_data.arch to one section per ABI; any other ABI is killed."""
    sections = [_section(arch, rules) for arch in ARCHES]
    head_length = 1 + 2 * len(ARCHES) + 1
    program = [_stmt(LD_W_ABS, _ARCH)]
    start = head_length
    for index, (arch, section) in enumerate(zip(ARCHES, sections, strict=True)):
        here = len(program) + 1  # position of this arch's `ja`
        assert here == 2 + 2 * index
        program += [_jump(JMP_JEQ_K, arch.audit, 0, 1), _stmt(JMP_JA, start - here - 1)]
        start += len(section)
    program.append(_stmt(RET_K, RET_KILL_PROCESS))
    for section in sections:
        program += section
    if len(program) > MAX_INSTRUCTIONS:
        raise ValueError(f"seccomp program too long: {len(program)} instructions")
    return program


def _section(arch: Arch, rules: Sequence[Rule]) -> list[Instruction]:
    out = [_stmt(LD_W_ABS, _NR)]
    if arch.foreign_from is not None:
        out += [_jump(JMP_JGE_K, arch.foreign_from, 0, 1), _stmt(RET_K, RET_KILL_PROCESS)]
    for rule in rules:
        if rule.syscall not in SYSCALLS:
            raise ValueError(f"syscall {rule.syscall!r} is not in the table")
        number = SYSCALLS[rule.syscall][arch.column]
        if number is not None:
            out += _block(number, rule)
    out.append(_stmt(RET_K, RET_ALLOW))
    return out


def _block(number: int, rule: Rule) -> list[Instruction]:
    """`if nr == number: <test>`, falling through to the next block with the syscall number loaded."""
    verdict = _stmt(RET_K, RET_ERRNO | rule.errno)
    if rule.arg is None:
        return [_jump(JMP_JEQ_K, number, 0, 1), verdict]
    if rule.mask:  # any of the bits set: the verdict; else reload the number and fall through
        body = [_stmt(LD_W_ABS, _ARGS + 8 * rule.arg), _jump(JMP_JSET_K, rule.mask, 0, 1), verdict]
        body.append(_stmt(LD_W_ABS, _NR))
        return [_jump(JMP_JEQ_K, number, 0, len(body)), *body]
    tests: list[Instruction] = []
    for index, value in enumerate(rule.values):
        if rule.unless:  # a match skips the remaining values and the verdict
            tests.append(_jump(JMP_JEQ_K, value, len(rule.values) - index, 0))
        else:
            tests += [_jump(JMP_JEQ_K, value, 0, 1), verdict]
    if rule.unless:
        tests.append(verdict)
    body = [_stmt(LD_W_ABS, _ARGS + 8 * rule.arg), *tests, _stmt(LD_W_ABS, _NR)]  # low half: little-endian
    return [_jump(JMP_JEQ_K, number, 0, len(body)), *body]


def _stmt(code: int, k: int) -> Instruction:
    return (code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> Instruction:
    if not (0 <= jt <= 255 and 0 <= jf <= 255):
        raise ValueError(f"jump offset out of range: {jt}, {jf}")
    return (code, jt, jf, k)


def encode(program: Sequence[Instruction]) -> bytes:
    """struct sock_filter[] in native byte order: u16 code, u8 jt, u8 jf, u32 k."""
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
