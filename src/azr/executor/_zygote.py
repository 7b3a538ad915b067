"""The zygote: the process every sandboxed child is forked from (standard library only).

The worker forks it once at start-up, before it has read any request, so the zygote's memory never holds a job's
code, inputs or results, and neither does any child forked from it (each child reads its own job from its own
pipe). The zygote talks to the worker over a Unix socket pair, one datagram per message:

- ``F`` + pids to reap + the descriptors of n children (job pipe read end, result and output pipe write ends,
  three each, passed with ``SCM_RIGHTS``): reap the pids (the worker has already killed their process groups),
  fork n children; answers ``P`` + their pids.
- ``R`` + pids: reap them; answers ``S`` + their wait statuses.

It exits when the worker's end of the socket closes, and dies with the worker (parent-death signal).
"""

from __future__ import annotations

import gc
import os
import signal
import struct

from . import _child

MAX_BATCH = 16
_FDS_SPACE = 0  # set in serve(): CMSG_SPACE for the most descriptors a message carries


def send(sock: object, tag: bytes, ints: list[int], fds: list[int] | None = None) -> None:
    """Send one message: a tag byte, ``ints`` as 32-bit integers, and ``fds`` as SCM_RIGHTS."""
    import _socket

    data = tag + struct.pack(f"={len(ints)}i", *ints)
    anc = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"={len(fds)}i", *fds))] if fds else []
    sock.sendmsg([data], anc)  # type: ignore[attr-defined]


def receive(sock: object, want_fds: bool = False) -> tuple[bytes, list[int], list[int]]:
    """One message: (tag, integers, descriptors); raises EOFError when the other end has closed."""
    import _socket

    space = _socket.CMSG_SPACE(4 * 3 * MAX_BATCH) if want_fds else 0
    data, anc, _flags, _addr = sock.recvmsg(4 + 4 * 8 * MAX_BATCH, space)  # type: ignore[attr-defined]
    if not data:
        raise EOFError
    fds: list[int] = []
    for level, kind, payload in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(payload) // 4
            fds += struct.unpack(f"={n}i", payload[: 4 * n])
    n = (len(data) - 1) // 4
    return data[:1], list(struct.unpack(f"={n}i", data[1 : 1 + 4 * n])), fds


def serve(sock: object, cfg: dict) -> None:
    """The zygote's loop; never returns."""
    try:
        cfg["prctl"](1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the worker
        for fd in (0, 1, 2):  # the worker's request and answer pipes are not the children's business
            os.dup2(cfg["devnull"], fd)
        zygote = os.getpid()
        while True:
            try:
                tag, ints, fds = receive(sock, want_fds=True)
            except (EOFError, OSError):
                break
            if tag == b"F":
                for pid in ints:
                    _reap(pid)
                gc.freeze()  # a child's collections must not walk (and copy) the zygote's young objects
                pids = [_fork(cfg, tuple(fds[i : i + 3]), zygote) for i in range(0, len(fds), 3)]  # type: ignore[arg-type]
                for fd in fds:
                    os.close(fd)
                send(sock, b"P", pids)
            elif tag == b"R":
                send(sock, b"S", [_reap(pid) for pid in ints])
    finally:
        os._exit(0)


def _fork(cfg: dict, fds: tuple[int, int, int], zygote: int) -> int:
    pid = os.fork()
    if pid == 0:
        _child.child_main(cfg, fds, zygote)
    try:
        os.setpgid(pid, pid)  # also done by the child: the group exists before the worker can kill it
    except OSError:
        pass
    return pid


def _reap(pid: int) -> int:
    try:
        return os.waitpid(pid, 0)[1]
    except ChildProcessError:
        return 0
