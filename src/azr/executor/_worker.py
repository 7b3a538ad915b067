"""The fork-server worker: a lean process (standard library only) that runs jobs in sandboxed children.

Started by :mod:`azr.executor._pool` as ``python -S -s -B -c ...`` (never by forking the trainer); in the bwrap
tier it is the sandbox's pid 1. It reads length-prefixed JSON requests on fd 0 and answers on fd 1. Before its
first request it forks the *zygote* (:mod:`._zygote`); every child is forked from the zygote, never from the
worker, so a child holds no other job's code, inputs or results. For each child the worker makes three pipes (job,
result, output), hands the child's ends to the zygote, writes the job into the job pipe, and reads the child's
result rows (untrusted: :func:`._child.parse_rows`) and printed output. Call ``k`` of a child must answer
``k * timeout_s`` after the child started; a child that answered all its calls, overran, printed too much or
wrote a bad row is killed by process group and reaped by the zygote; a child that died mid-way is replaced by a
fresh one for the remaining calls.

Cost per child. On a 2-core VM a bare ``os.fork`` + ``_exit`` + ``wait`` of this interpreter costs ~0.35 ms of
CPU; the rest is mostly copy-on-write page faults (~2.5 µs each): every page that the child, or the zygote between
two forks, writes to is copied. Hence the zygote forks children in batches and does little between forks, limits
that are inherited are set once in the worker, the seccomp policy is split into a worker filter (installed once,
inherited) and a short child filter, the zygote imports little (no ast, traceback or shutil), result rows are a
small text format, stdout writes through (no flush), and ``gc.freeze()`` keeps a child's collections off the
zygote's objects.
"""

from __future__ import annotations

import gc
import io
import json
import os
import resource
import select
import signal
import sys
import time
from collections import deque

from . import _child, _scratch, _seccomp, _zygote

_cfg: dict = {}
_link: _ZygoteLink
_PIPE_BUFFER = 65536  # Linux's default pipe capacity


def _send(fd: int, obj: object) -> None:
    data = _child.frame(obj)
    while data:
        data = data[os.write(fd, data) :]


def _worker_limits() -> None:
    """Limits set once in the worker and inherited by every child (fewer syscalls per child)."""
    for which, value in (
        (resource.RLIMIT_AS, _cfg["memory_mb"] * 1024 * 1024),
        (resource.RLIMIT_FSIZE, _cfg["max_file_bytes"]),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))


class _Child:
    """Book-keeping for one running child: its pipes, what it has said so far, and its deadline."""

    def __init__(self, index: int, calls: list | None, job: dict, slot: int) -> None:
        self.index, self.calls, self.slot = index, calls, slot
        self.n = max(1, len(calls or ()))
        uid = _cfg["uid_base"] + slot if _cfg["uid_base"] else None
        cpu = int(_cfg["timeout_s"] * self.n) + 1
        self.payload = _child.job_payload(job["code"], job.get("entry"), calls, cpu, uid)
        self.job_r, self.job_w = os.pipe()
        self.res_r, self.res_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.buf: bytes | None = b""
        self.out, self.lines = bytearray(), []
        self.why = ""
        self.pid = 0

    @property
    def child_fds(self) -> list[int]:
        return [self.job_r, self.res_w, self.out_w]

    def hand_over(self) -> None:
        """Before the fork: a job that fits in the pipe's buffer is written now, so that the child finds it
        there and never waits for it (a wait is a sleep and a wake-up per child)."""
        if len(self.payload) <= _PIPE_BUFFER:
            self._write_job()

    def started(self, pid: int) -> None:
        """After the zygote forked it: drop the child's ends, hand it the rest of its job, start its clock."""
        self.pid = pid
        for fd in self.child_fds:
            os.close(fd)
        if self.job_w >= 0:
            self._write_job()
        self.t0 = time.monotonic()

    def _write_job(self) -> None:
        try:
            data = self.payload
            while data:
                data = data[os.write(self.job_w, data) :]
        except OSError:  # the child died before reading it: its result pipe says so
            pass
        os.close(self.job_w)
        self.job_w = -1

    @property
    def deadline(self) -> float:  # only once started (pid known)
        """Call k (counting from 1) must have answered k * timeout_s after the start: rows cannot buy time."""
        return self.t0 + _cfg["timeout_s"] * (len(self.lines) + 1)

    def on_output(self, chunk: bytes) -> None:
        self.out += chunk
        if len(self.out) > _cfg["max_out"]:
            self.why = "output"

    def on_result(self, chunk: bytes) -> None:
        if self.buf is None:
            return
        done, self.buf = _child.parse_rows(self.buf + chunk, _cfg["max_out"])
        self.lines += done
        if self.buf is None or len(self.lines) >= self.n:  # a bad row, or every call answered
            self.lines = self.lines[: self.n]
            self.why = "done"

    def result(self, wstatus: int) -> tuple[list[list], list | None]:
        """(rows for the calls it answered, the rest of its calls or None); after it was killed and reaped."""
        while self.why != "output":
            chunk = os.read(self.out_r, 65536)  # the child is gone: this reaches EOF without blocking
            if not chunk:
                break
            self.on_output(chunk)
        os.close(self.res_r)
        os.close(self.out_r)
        stdout = bytes(self.out[: _cfg["max_out"]]).decode("utf-8", "replace")
        if self.why == "output":  # printed output over the cap: rejected for every call of this child
            return [[*_death("output", 0), stdout] for _ in range(self.n)], None
        rows = [[*line, stdout] for line in self.lines]
        if len(rows) >= self.n or (rows and rows[-1][2] == "SandboxError"):
            rows += [[*_child.malformed(), stdout] for _ in range(self.n - len(rows))]
            return rows, None
        rows.append([*_death(self.why, wstatus), stdout])
        rest = (self.calls or [])[len(rows) :]
        return rows, rest or None


class _ZygoteLink:
    """The worker's end of the zygote's socket. Forks are asked for without waiting (the pids come back while
    the worker reads other children's rows); reaps that need an answer wait for it, handling the fork answers
    that come before it (the zygote answers in order). Children whose exit status nobody needs are reaped by
    the zygote in passing, with the next fork request."""

    def __init__(self, sock: object) -> None:
        self.sock = sock
        self.fd: int = sock.fileno()  # type: ignore[attr-defined]
        self.waiting: deque[list[_Child]] = deque()
        self.unreaped: list[int] = []

    def fork(self, batch: list[_Child]) -> None:
        for c in batch:
            c.hand_over()
        _zygote.send(self.sock, b"F", self.unreaped, [fd for c in batch for fd in c.child_fds])
        self.unreaped = []
        self.waiting.append(batch)

    def on_readable(self) -> None:
        """One answer from the zygote: the pids of the oldest batch not yet started."""
        tag, pids, _ = _zygote.receive(self.sock)
        batch = self.waiting.popleft() if self.waiting else []
        if tag != b"P" or len(pids) != len(batch):
            raise RuntimeError("zygote answered out of protocol")
        for c, pid in zip(batch, pids, strict=True):
            c.started(pid)

    def reap(self, pids: list[int]) -> list[int]:
        """Have the zygote reap ``pids`` now; returns their wait statuses."""
        _zygote.send(self.sock, b"R", pids)
        while self.waiting:
            self.on_readable()
        tag, statuses, _ = _zygote.receive(self.sock)
        if tag != b"S" or len(statuses) != len(pids):
            raise RuntimeError("zygote answered out of protocol")
        return statuses


def _end(link: _ZygoteLink, children: list[_Child]) -> list[int]:
    """Kill the children's process groups; returns their wait statuses where they matter (0 elsewhere). A child
    that answered every call needs none: the zygote reaps it with the next batch. As root outside bwrap every
    child is reaped now, so that its uid is free (and what it left swept) before the next child gets it."""
    for c in children:
        try:
            os.killpg(c.pid, signal.SIGKILL)
        except OSError:
            pass
    sync = bool(_cfg["uid_base"])
    wanted = [c for c in children if sync or (len(c.lines) < c.n and c.why != "output")]
    link.unreaped += [c.pid for c in children if c not in wanted]
    statuses = (
        dict(zip((c.pid for c in wanted), link.reap([c.pid for c in wanted]), strict=True)) if wanted else {}
    )
    if sync and not _cfg["seccomp"]:  # files a job without the filter left where its uid could write
        for c in wanted:
            _scratch.sweep_owned(_cfg["uid_base"] + c.slot)
    return [statuses.get(c.pid, 0) for c in children]


def run_jobs(jobs: list[dict], parallel: int) -> list[list[list]]:
    """Answer all jobs, with up to ``parallel`` children running at once."""
    link = _link
    results: list[list[list]] = [[] for _ in jobs]
    pending = deque((i, job.get("calls")) for i, job in enumerate(jobs))
    active: dict[int, _Child] = {}  # read fd -> child
    free = list(range(parallel))  # slots (a uid each when running as root outside bwrap)
    poller = select.poll()
    poller.register(link.fd, select.POLLIN)
    refill = max(
        1, parallel * 3 // 4
    )  # forks come in batches: one message to the zygote each (measured: 6 of 8 best)
    while pending or active:
        if pending and len(free) >= min(refill, len(pending)):
            batch = []
            while pending and free:
                i, calls = pending.popleft()
                batch.append(_Child(i, calls, jobs[i], free.pop()))
            link.fork(batch)
            for c in batch:
                for fd in (c.res_r, c.out_r):
                    active[fd] = c
                    poller.register(fd, select.POLLIN)
        children = set(active.values())
        deadlines = [c.deadline for c in children if c.pid]
        wait = max(0.0, min(deadlines) - time.monotonic()) * 1000 if deadlines else None
        for fd, _ in poller.poll(wait):
            if fd == link.fd:
                link.on_readable()
                continue
            _on_readable(active, poller, fd)
        now = time.monotonic()
        ended = [c for c in children if c.pid and (c.why or c.deadline <= now)]
        if ended:
            _finish(link, ended, active, poller, free, results, pending)
    if link.unreaped:  # before answering: no child of this request outlives it, not even as a zombie
        link.reap(link.unreaped)
        link.unreaped = []
    return results


def _on_readable(active: dict[int, _Child], poller: select.poll, fd: int) -> None:
    c = active.get(fd)
    if c is None or c.why:
        return
    chunk = os.read(fd, 65536)
    if not chunk:
        poller.unregister(fd)
        if fd == c.res_r:  # the child closed its result pipe (it exited, or will not answer)
            c.why = "done"
    else:
        (c.on_output if fd == c.out_r else c.on_result)(chunk)


def _finish(
    link: _ZygoteLink,
    ended: list[_Child],
    active: dict[int, _Child],
    poller: select.poll,
    free: list[int],
    results: list[list[list]],
    pending: deque,
) -> None:
    """Kill, reap and record the ended children; a child that died mid-way queues the rest of its calls."""
    for c in ended:
        c.why = c.why or "timeout"
        for fd in (c.res_r, c.out_r):
            del active[fd]
            try:
                poller.unregister(fd)
            except KeyError:
                pass
    for c, wstatus in zip(ended, _end(link, ended), strict=True):
        free.append(c.slot)
        rows, rest = c.result(wstatus)
        results[c.index] += rows
        if rest is not None:
            pending.appendleft((c.index, rest))


def _death(why: str, wstatus: int) -> list:
    if why == "timeout":
        return ["timeout", None, None, f"over the {_cfg['timeout_s']} s wall-clock limit", _cfg["timeout_s"]]
    if why == "output":
        return ["output_too_large", None, None, f"more than {_cfg['max_out']} characters of output", 0.0]
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        if sig == signal.SIGXCPU:
            return ["timeout", None, None, "CPU-time limit reached", 0.0]
        if sig == signal.SIGXFSZ:
            return ["output_too_large", None, None, "file-size limit reached", 0.0]
        if sig != signal.SIGKILL or why != "done":
            return ["error", None, "Killed", f"killed by signal {signal.Signals(sig).name}", 0.0]
    return ["error", None, "SystemExit", "process exited without a result", 0.0]


def _prepare() -> None:
    """Make the worker itself harder to attack from its children, and the zygote's state what a child needs."""
    _seccomp.prctl(4, 0)  # PR_SET_DUMPABLE = 0: its /proc entries are closed to same-uid processes
    _seccomp.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the process that started us
    os.environ.clear()  # the environment was already empty but for PYTHONHASHSEED, read at start-up
    for name in ("stdout", "stderr"):  # write-through: a child's prints reach its pipe without a final flush
        old = getattr(sys, name)
        raw = io.FileIO(old.fileno(), "w", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, old.encoding, old.errors, write_through=True))
    if _cfg["tier"] != "none":
        _worker_limits()
    os.closerange(3, 1 << 16)
    _cfg["devnull"] = os.open(os.devnull, os.O_RDONLY)
    _cfg["maxfd"] = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)
    _cfg["prctl"] = _seccomp.libc_prctl()
    _cfg["unshare"] = _seccomp.libc_function("unshare")
    if not _cfg["drop_uid"]:
        _cfg["uid_base"] = 0
    _child.warm_up()
    if _cfg["seccomp"]:
        _cfg["filter"] = _seccomp.Prepared("child", child_changes_uid=bool(_cfg["uid_base"]))


def _start_zygote() -> None:
    """Fork the zygote (before any request: it never holds a job's data) and keep our end of its socket."""
    global _link
    import _socket

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    if _cfg["seccomp"]:
        _seccomp.install_worker(
            child_changes_uid=bool(_cfg["uid_base"])
        )  # inherited by the zygote and every child, which add the short child filter
    gc.collect()
    gc.freeze()  # children's collections then skip the zygote's objects (fewer copy-on-write faults)
    if os.fork() == 0:
        ours.close()
        _zygote.serve(theirs, _cfg)
    theirs.close()
    _link = _ZygoteLink(ours)


def main() -> None:
    """Serve requests until fd 0 closes. The config is a JSON object in ``sys.argv[1]``."""
    _cfg.update(json.loads(sys.argv[1]))
    _prepare()
    _start_zygote()
    _send(1, {"ready": os.getpid()})
    while True:
        try:
            request = _child.read_message(0)
        except EOFError:
            break
        # at most 8: a child in a fork batch holds 6 of the worker's 64 descriptors (3 pipes), then 2-3
        parallel = max(1, min(int(_cfg.get("parallel", 8)), 8))
        _send(1, run_jobs(request["jobs"], parallel))  # type: ignore[index]
