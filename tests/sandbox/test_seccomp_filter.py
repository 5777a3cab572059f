"""The pure-Python seccomp program: its shape, its verdicts (on a tiny BPF interpreter, for every ABI we
filter), its behaviour under the real kernel, and its syscall table against libseccomp and the headers."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import struct
import subprocess
import sys

import pytest

from chalicelib.sandbox import kernel
from chalicelib.sandbox.seccomp_filter import (
    ARCHES,
    DENIED_SYSCALLS,
    JMP_JA,
    JMP_JEQ_K,
    JMP_JGE_K,
    JMP_JSET_K,
    LD_W_ABS,
    RET_ALLOW,
    RET_ERRNO,
    RET_K,
    RET_KILL_PROCESS,
    SYSCALLS,
    Arch,
    compiled_filter,
    deny_prctl_filter,
    platform_policy_filter,
)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AUDIT_ARCH_I386 = 0x40000003
AF_INET, AF_INET6, AF_PACKET, AF_NETLINK, AF_VSOCK, AF_UNIX = 2, 10, 17, 16, 40, 1


def _instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]


def evaluate(program: bytes, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What the kernel's classic BPF would return for this seccomp_data (the opcodes we emit only)."""
    data = struct.pack("<IIQ6Q", nr, arch, 0, *(args + (0,) * (6 - len(args))))
    code = _instructions(program)
    pc, acc = 0, 0
    while True:
        op, jt, jf, k = code[pc]
        if op == RET_K:
            return k
        if op == LD_W_ABS:
            acc, pc = struct.unpack_from("<I", data, k)[0], pc + 1
        elif op == JMP_JA:
            pc += 1 + k
        elif op in (JMP_JEQ_K, JMP_JGE_K, JMP_JSET_K):
            taken = acc == k if op == JMP_JEQ_K else acc >= k if op == JMP_JGE_K else bool(acc & k)
            pc += 1 + (jt if taken else jf)
        else:
            raise AssertionError(f"unexpected opcode {op:#x} at {pc}")


def test_program_shape_every_jump_lands_forward_inside() -> None:
    program = compiled_filter()
    code = _instructions(program)
    per_arch = [sum(1 for name in DENIED_SYSCALLS if SYSCALLS[name][arch.column] is not None) for arch in ARCHES]
    # head: load arch, (jeq + ja) per ABI, kill; per ABI: load nr, [x32 check + kill], 2 per denied syscall,
    # socket and kill blocks (5 each), allow.
    expected = 2 + 2 * len(ARCHES) + sum(1 + 2 * n + 10 + 1 for n in per_arch) + 2
    assert (len(program) % 8, len(code)) == (0, expected)
    assert len(code) < 256  # small: about 1.7 KB
    for pc, (op, jt, jf, k) in enumerate(code):
        assert op in (LD_W_ABS, JMP_JA, JMP_JEQ_K, JMP_JGE_K, RET_K), pc
        if op == JMP_JA:
            assert pc + 1 + k < len(code)
        elif op != RET_K and op != LD_W_ABS:
            assert max(jt, jf) <= 255 and pc + 1 + max(jt, jf) < len(code), pc
        if op == LD_W_ABS:
            assert k in (0, 4, 16), pc  # nr, arch, low half of args[0]
    assert code[-1][0] == RET_K


@pytest.mark.parametrize("arch", ARCHES, ids=lambda arch: arch.name)
def test_verdicts_for_each_abi(arch: Arch) -> None:
    program, a = compiled_filter(), arch
    number = {name: numbers[a.column] for name, numbers in SYSCALLS.items()}
    eperm, eacces = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.EACCES
    for name in DENIED_SYSCALLS:
        if number[name] is not None:
            assert evaluate(program, a.audit, number[name]) == eperm, name
    for family in (AF_INET, AF_INET6, AF_PACKET, AF_NETLINK, AF_VSOCK, 0x1_0000_0000 | AF_INET):
        assert evaluate(program, a.audit, number["socket"], (family,)) == eacces, family
    assert evaluate(program, a.audit, number["socket"], (AF_UNIX, 1)) == RET_ALLOW
    for target in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        assert evaluate(program, a.audit, number["kill"], (target, 9)) == eperm
    assert evaluate(program, a.audit, number["kill"], (1234, 9)) == RET_ALLOW
    for allowed in (0, 1, 3, 59, 63, 221, 260, 435):  # read, write, close, execve/wait4/clone3...
        if allowed not in (number[name] for name in DENIED_SYSCALLS):
            assert evaluate(program, a.audit, allowed) == RET_ALLOW, allowed
    assert evaluate(program, a.audit, number["prctl"], (kernel.PR_SET_NAME,)) == RET_ALLOW


def test_foreign_abis_are_killed() -> None:
    program = compiled_filter()
    assert evaluate(program, AUDIT_ARCH_I386, 102) == RET_KILL_PROCESS  # socketcall, i386 via int 0x80
    assert evaluate(program, 0xC000003E, 0x40000000 | 41) == RET_KILL_PROCESS  # socket, x32
    assert evaluate(program, 0x800000B7, 198) == RET_KILL_PROCESS  # big-endian aarch64: args differ


def test_deny_prctl_filter_only_refuses_the_named_options() -> None:
    program = deny_prctl_filter(["PR_SET_NAME", "PR_SET_SECCOMP"])
    for arch in ARCHES:
        prctl, seccomp = SYSCALLS["prctl"][arch.column], SYSCALLS["seccomp"][arch.column]
        assert evaluate(program, arch.audit, prctl, (kernel.PR_SET_NAME,)) == RET_ERRNO | errno.EPERM
        assert evaluate(program, arch.audit, prctl, (kernel.PR_SET_SECCOMP,)) == RET_ERRNO | errno.EPERM
        assert evaluate(program, arch.audit, prctl, (kernel.PR_SET_DUMPABLE,)) == RET_ALLOW
        assert evaluate(program, arch.audit, seccomp or 0) == RET_ERRNO | errno.EPERM
        assert evaluate(program, arch.audit, SYSCALLS["socket"][arch.column] or 0, (AF_INET,)) == RET_ALLOW
    with pytest.raises(ValueError):
        deny_prctl_filter(["PR_SET_NOTHING"])


_UNDER_FILTER = """
import ctypes, errno, json, os, socket, subprocess, sys
sys.path.insert(0, sys.argv[1])
from chalicelib.sandbox import kernel, seccomp_filter
kernel.install_filter(seccomp_filter.compiled_filter())
libc, out = kernel.libc(), {}
for family in (2, 10, 17, 16, 40, 1):
    try:
        socket.socket(family, socket.SOCK_DGRAM if family in (16, 17, 40) else socket.SOCK_STREAM).close()
        out[family] = "ok"
    except OSError as exc:
        out[family] = errno.errorcode[exc.errno]
def call(name, *args):
    ok = libc.syscall(seccomp_filter.SYSCALLS[name][0 if os.uname().machine == "x86_64" else 1], *args) == 0
    return "ok" if ok else errno.errorcode[ctypes.get_errno()]
out["kill(-1, 0)"] = call("kill", -1, 0)
out["ptrace(TRACEME)"] = call("ptrace", 0, 0, 0, 0)
out["io_uring_setup"] = call("io_uring_setup", 1, 0)
out["pidfd_getfd"] = call("pidfd_getfd", -1, 0, 0)
out["echo"] = subprocess.run(["/bin/echo", "still runs"], capture_output=True, text=True).stdout
print(json.dumps(out))
"""


def test_real_kernel_denies_network_and_listed_calls_and_runs_programs() -> None:
    done = subprocess.run([sys.executable, "-I", "-c", _UNDER_FILTER, _REPO], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "2": "EACCES",
        "10": "EACCES",
        "17": "EACCES",
        "16": "EACCES",
        "40": "EACCES",
        "1": "ok",
        "kill(-1, 0)": "EPERM",  # signal 0: nothing would be sent even if the filter failed
        "ptrace(TRACEME)": "EPERM",
        "io_uring_setup": "EPERM",
        "pidfd_getfd": "EPERM",
        "echo": "still runs\n",
    }


_FOREIGN_ABI = """
import ctypes, mmap, sys
sys.path.insert(0, sys.argv[1])
from chalicelib.sandbox import kernel, seccomp_filter
kernel.install_filter(seccomp_filter.compiled_filter())
if sys.argv[2] == "i386":  # mov eax, 20 (getpid); int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(bytes([0xB8, 0x14, 0, 0, 0, 0xCD, 0x80, 0xC3]))
    ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
else:
    kernel.libc().syscall(0x40000000 | 39)  # getpid through the x32 ABI
print("survived")
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="i386 and x32 are x86_64's other ABIs")
@pytest.mark.parametrize("abi", ["i386", "x32"])
def test_real_kernel_kills_other_abis(abi: str) -> None:
    done = subprocess.run([sys.executable, "-I", "-c", _FOREIGN_ABI, _REPO, abi], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (-signal.SIGSYS, "")


_DENY_PRCTL = """
import sys
sys.path.insert(0, sys.argv[1])
from chalicelib.sandbox import kernel, seccomp_filter
kernel.install_filter(seccomp_filter.deny_prctl_filter(["PR_SET_NAME", "PR_SET_SECCOMP"]))
print(kernel.allowed(kernel.PR_SET_NAME, 0), kernel.allowed(kernel.PR_SET_DUMPABLE, 1), end=" ")
try:
    kernel.install_filter(seccomp_filter.compiled_filter())
    print("installed")
except OSError as exc:
    print("refused", exc.errno)
"""


def test_real_kernel_deny_prctl_filter_refuses_our_filter_both_ways() -> None:
    done = subprocess.run([sys.executable, "-I", "-c", _DENY_PRCTL, _REPO], capture_output=True, text=True)
    assert done.stdout == f"False True refused {errno.EPERM}\n", done.stderr


CLONE_NEWUSER, CLONE_NEWNET, CLONE_THREAD_FLAGS, SIGCHLD = 0x10000000, 0x40000000, 0x003D0F00, 17


def test_platform_policy_refuses_namespaces_and_the_named_prctls() -> None:
    program = platform_policy_filter(["PR_SET_CHILD_SUBREAPER"])
    for arch in ARCHES:
        number = {name: numbers[arch.column] or 0 for name, numbers in SYSCALLS.items()}
        eperm = RET_ERRNO | errno.EPERM
        for flags in (CLONE_NEWUSER | SIGCHLD, CLONE_NEWNET, 0x1_0000_0000 | CLONE_NEWUSER):
            assert evaluate(program, arch.audit, number["clone"], (flags,)) == eperm, flags
        for flags in (SIGCHLD, CLONE_THREAD_FLAGS, 0x01200011):  # fork, pthread_create, glibc's fork
            assert evaluate(program, arch.audit, number["clone"], (flags,)) == RET_ALLOW, flags
        assert evaluate(program, arch.audit, number["clone3"]) == RET_ERRNO | errno.ENOSYS
        assert evaluate(program, arch.audit, number["unshare"], (CLONE_NEWUSER,)) == eperm
        assert evaluate(program, arch.audit, number["setns"]) == eperm
        assert evaluate(program, arch.audit, number["prctl"], (kernel.PR_SET_CHILD_SUBREAPER,)) == eperm
        assert evaluate(program, arch.audit, number["prctl"], (kernel.PR_SET_NAME,)) == RET_ALLOW
    without = platform_policy_filter([], deny_namespaces=False)
    assert evaluate(without, ARCHES[0].audit, SYSCALLS["unshare"][0] or 0) == RET_ALLOW


_NO_NAMESPACES = """
import os, subprocess, sys, threading
sys.path.insert(0, sys.argv[1])
from chalicelib.sandbox import kernel, seccomp_filter
kernel.install_filter(seccomp_filter.platform_policy_filter([]))
out = [str(kernel.libc().unshare(0x10000000) == -1)]
thread = threading.Thread(target=out.append, args=("thread",))
thread.start(); thread.join()
out.append(subprocess.run(["/bin/echo", "forked"], capture_output=True, text=True).stdout.strip())
bwrap = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--unshare-user", "/bin/true"], capture_output=True)
out.append("bwrap-refused" if bwrap.returncode != 0 else "bwrap-ran")
print(" ".join(out))
"""


def test_real_kernel_platform_policy_allows_threads_and_forks_but_no_namespaces() -> None:
    done = subprocess.run([sys.executable, "-I", "-c", _NO_NAMESPACES, _REPO], capture_output=True, text=True)
    assert done.stdout == "True thread forked bwrap-refused\n", done.stderr


def _libseccomp_numbers() -> dict[str, list[int]]:
    script = (
        "import json, sys, seccomp\n"
        "arches = (seccomp.Arch.X86_64, seccomp.Arch.AARCH64)\n"
        "out = {n: [seccomp.resolve_syscall(a, n) for a in arches] for n in json.loads(sys.argv[1])}\n"
        "out['audit'] = [int(a) & 0xFFFFFFFF for a in arches]\n"
        "print(json.dumps(out))\n"
    )
    try:
        done = subprocess.run(["/usr/bin/python3", "-I", "-c", script, json.dumps(list(SYSCALLS))], capture_output=True)
    except OSError:
        pytest.skip("no /usr/bin/python3")
    if done.returncode != 0:
        pytest.skip(f"python3-seccomp is not importable by /usr/bin/python3: {done.stderr.decode()[-200:]}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_syscall_table_matches_libseccomp() -> None:
    resolved = _libseccomp_numbers()
    assert resolved.pop("audit") == [arch.audit for arch in ARCHES]
    # libseccomp answers a negative pseudo-number for a syscall the arch does not have.
    assert {name: tuple(n if n >= 0 else None for n in numbers) for name, numbers in resolved.items()} == SYSCALLS


@pytest.mark.parametrize(
    ("column", "header"),
    [(0, "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), (1, "/usr/include/asm-generic/unistd.h")],
)
def test_syscall_table_matches_kernel_headers(column: int, header: str) -> None:
    if not os.path.exists(header):
        pytest.skip(f"{header} not installed")
    with open(header) as handle:
        defined = {m[0]: int(m[1]) for m in re.findall(r"#define __NR_(\w+)\s+(\d+)\b", handle.read())}
    assert {name: defined.get(name) for name in SYSCALLS} == {name: n[column] for name, n in SYSCALLS.items()}
    machine = ("x86_64", "aarch64")[column]
    assert kernel.SECCOMP_SYSCALL[machine] == SYSCALLS["seccomp"][column]
