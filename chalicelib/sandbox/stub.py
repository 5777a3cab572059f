"""The last process of a prepared sandbox: it waits for one job, then becomes the job's program.

Started as `python3 -I -S -c <this source> FD [harden]` by the supervisor, already where the job will run: in the
sandbox's namespaces, as the slot uid, under the seccomp filter, in the work dir, with the job's stdout and
stderr. It imports only C modules of the standard library (`socket` or `json` would pull in enum and re),
so it is ready after a few milliseconds of CPU, before any job exists.

On the socket FD it says b"ready", then receives b"job" with two descriptors: a memfd holding the job
(marshal: argv, files, rlimits, file modes) and the job's stdin. It writes the files into the work dir,
applies the rlimits, puts stdin on fd 0, closes every other descriptor, says b"exec <its CPU time in us>"
and execs the program with the environment it was started with (set by bubblewrap or the supervisor, the
same as a program started directly gets). Signal dispositions, the signal mask, umask and cwd are left as
the supervisor and bubblewrap set them, which is what a directly started program inherits too. Any failure
is reported as b"error ..." and ends the stub with 127: the program never starts half-prepared.

With `harden` (a sandbox without a uid of its own: other jobs may run as the same uid) the stub makes itself
non-dumpable while it waits, so no other process of the uid can open its memory or descriptors through
/proc; the exec makes the program dumpable again, as a directly started one is.
"""

import _socket
import marshal
import os
import resource
import sys

_SOCKET = int(sys.argv[1]) if __name__ == "__main__" else -1
_INT = 4  # bytes per descriptor in SCM_RIGHTS


def _receive(sock: _socket.socket) -> tuple[bytes, list[int]]:
    message, ancillary, _, _ = sock.recvmsg(16, _socket.CMSG_SPACE(2 * _INT))
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT
            fds += [int.from_bytes(data[i : i + _INT], sys.byteorder) for i in range(0, usable, _INT)]
    return message, fds


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _write_files(files: list[tuple[str, bytes]], file_mode: int, dir_mode: int | None) -> None:
    """Write each file under the cwd; `dir_mode` None means "as mkdir with our umask makes it"."""
    for path, content in files:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            directory = "/".join(parts[:depth])
            if not os.path.isdir(directory):
                os.mkdir(directory, 0o777 if dir_mode is None else dir_mode)
                if dir_mode is not None:
                    os.chmod(directory, dir_mode)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode)
        try:
            if dir_mode is not None:  # bubblewrap's own copies ignore the umask
                os.fchmod(fd, file_mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def _become(sock: _socket.socket, job: dict[str, object], stdin_fd: int) -> None:
    argv = job["argv"]
    assert isinstance(argv, list)
    for name, soft, hard in job["rlimits"]:  # type: ignore[attr-defined]
        resource.setrlimit(name, (soft, hard))
    os.dup2(stdin_fd, 0)  # inheritable, like any dup2 target
    os.closerange(3, sock.fileno())
    os.closerange(sock.fileno() + 1, 1 << 16)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sock.sendall(b"exec %d" % round((usage.ru_utime + usage.ru_stime) * 1e6))
    os.execve(argv[0], argv, os.environb)  # the socket is close-on-exec


def _non_dumpable() -> None:
    import ctypes  # only here: the import costs more than the rest of the stub

    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE; a platform that refuses it leaves us as we were


def main() -> None:
    sock = _socket.socket(fileno=_SOCKET)
    try:
        os.set_inheritable(_SOCKET, False)
        if sys.argv[2:] == ["harden"]:
            _non_dumpable()
        sock.sendall(b"ready")
        message, fds = _receive(sock)
        if message != b"job" or len(fds) != 2:
            raise RuntimeError(f"expected a job and two descriptors, got {message!r} and {len(fds)}")
        payload_fd, stdin_fd = fds
        job = marshal.loads(_read_all(payload_fd))
        _write_files(job["files"], job["file_mode"], job["dir_mode"])
        _become(sock, job, stdin_fd)
    except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, then the stub ends
        try:
            sock.sendall(b"error cannot start the job: " + repr(exc).encode())
        finally:
            os._exit(127)


if __name__ == "__main__":
    main()
