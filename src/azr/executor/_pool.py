"""The pool of fork-server workers and the scheduler that spreads jobs over them.

A job is a dict ``{"code", "calls": [input_text, ...] | None, "entry"}``; its answer is one
raw result row per call (``[status, value, error_type, message, seconds, stdout]``). A job may be pinned to a
worker (``worker`` index modulo the pool size): the determinism check pins its runs to different workers, which
are separate interpreters with different hash seeds and address-space layouts.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import signal
import struct
import subprocess
from collections import deque
from dataclasses import dataclass, field

from ._tiers import stage_package, worker_command

_CHUNK = 64
_DEAD_ROW = ["error", None, "SandboxError", "the sandbox worker died; it was restarted", 0.0, ""]


@dataclass
class _Worker:
    proc: subprocess.Popen
    index: int
    queue: deque = field(default_factory=deque)
    in_flight: list = field(default_factory=list)
    buf: bytearray = field(default_factory=bytearray)


class Pool:
    """``n`` workers in ``tier``; :meth:`run_jobs` answers a list of jobs in order, using every worker."""

    def __init__(self, tier: str, n: int, wcfg: dict) -> None:
        self.tier, self.n, self._wcfg = tier, n, wcfg
        self._stage = stage_package()
        self._seeds = random.sample(range(1, 2**31), n)
        # As root outside bwrap every child slot runs as a uid of its own, in a range no other pool picks.
        self._uid_base = 1_000_000_000 + random.randrange(700_000) * 4096
        self._workers: list[_Worker] = []
        try:
            self._workers = [self._spawn(i) for i in range(n)]
        except BaseException:
            self.close()
            raise

    def _spawn(self, i: int) -> _Worker:
        wcfg = dict(self._wcfg, uid_base=self._uid_base + 16 * i)
        argv, env = worker_command(self.tier, self._stage, wcfg, self._seeds[i])
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # read only if it fails to start, then closed: nothing of ours is inherited
            env=env,
            cwd="/",
            start_new_session=True,
            bufsize=0,
        )
        w = _Worker(proc, i)
        try:
            hello = self._read_message(w)
        except (EOFError, OSError, ValueError):
            hello = None
        if not (isinstance(hello, dict) and "ready" in hello):
            self._kill(w)
            err = proc.stderr.read().decode(errors="replace").strip()[-2000:]  # type: ignore[union-attr]
            raise RuntimeError(
                f"sandbox worker {i} failed to start in tier {self.tier}: {err or 'no message'}"
            )
        proc.stderr.close()  # type: ignore[union-attr]
        return w

    @property
    def pids(self) -> list[int]:
        """Process ids of the worker processes as started (bwrap's pid in the bwrap tier)."""
        return [w.proc.pid for w in self._workers]

    def _read_message(self, w: _Worker) -> object:
        fd = w.proc.stdout.fileno()  # type: ignore[union-attr]
        while True:
            msg = self._take(w)
            if msg is not None:
                return msg
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError
            w.buf += chunk

    @staticmethod
    def _take(w: _Worker) -> object | None:
        if len(w.buf) < 4:
            return None
        (n,) = struct.unpack(">I", w.buf[:4])
        if len(w.buf) < 4 + n:
            return None
        data = bytes(w.buf[4 : 4 + n])
        del w.buf[: 4 + n]
        return json.loads(data)  # a worker is trusted, but a bad frame still only restarts it (ValueError)

    def _send(self, w: _Worker, jobs: list[tuple[int, dict]]) -> None:
        w.in_flight = jobs
        data = json.dumps({"jobs": [job for _, job in jobs]}).encode()
        w.proc.stdin.write(struct.pack(">I", len(data)) + data)  # type: ignore[union-attr]

    def _next_chunk(self, w: _Worker, shared: deque, remaining: int) -> list[tuple[int, dict]]:
        size = max(1, min(_CHUNK, remaining // (2 * self.n) or 1))
        chunk: list[tuple[int, dict]] = []
        while len(chunk) < size and (w.queue or shared):
            chunk.append((w.queue or shared).popleft())
        return chunk

    def run_jobs(self, jobs: list[dict], pins: list[int | None] | None = None) -> list[list[list]]:
        """Answer every job (in input order); a worker that dies is restarted and its chunk reported as errors."""
        results: list[list[list] | None] = [None] * len(jobs)
        shared: deque = deque()
        for i, job in enumerate(jobs):
            pin = pins[i] if pins else None
            (self._workers[pin % self.n].queue if pin is not None else shared).append((i, job))
        sel = selectors.DefaultSelector()
        remaining = len(jobs)
        try:
            for w in self._workers:
                self._start_next(w, sel, shared, remaining)
            while sel.get_map():
                for key, _ in sel.select():
                    w = key.data
                    remaining -= self._on_readable(w, sel, results)
                    w = self._workers[w.index]
                    if not w.in_flight:
                        self._start_next(w, sel, shared, remaining)
        finally:
            sel.close()
        return [r if r is not None else [list(_DEAD_ROW)] for r in results]

    def _start_next(self, w: _Worker, sel: selectors.BaseSelector, shared: deque, remaining: int) -> None:
        chunk = self._next_chunk(w, shared, remaining)
        if not chunk:
            return
        try:
            self._send(w, chunk)
        except OSError:
            w = self._restart(w)
            self._send(w, chunk)
        sel.register(w.proc.stdout, selectors.EVENT_READ, w)

    def _on_readable(self, w: _Worker, sel: selectors.BaseSelector, results: list) -> int:
        chunk = os.read(w.proc.stdout.fileno(), 1 << 20)  # type: ignore[union-attr]
        if not chunk:
            done = w.in_flight
            for i, job in done:
                n = max(1, len(job.get("calls") or ()))
                results[i] = [list(_DEAD_ROW) for _ in range(n)]
            w.in_flight = []
            sel.unregister(w.proc.stdout)
            self._restart(w)
            return len(done)
        w.buf += chunk
        try:
            msg = self._take(w)
        except ValueError:
            msg = []
        if msg is None:
            return 0
        done, w.in_flight = w.in_flight, []
        if not (isinstance(msg, list) and len(msg) == len(done)):  # out of protocol: restart it
            msg = [[list(_DEAD_ROW)] * max(1, len(job.get("calls") or ())) for _, job in done]
            sel.unregister(w.proc.stdout)
            self._restart(w)
            for (i, _), rows in zip(done, msg, strict=True):
                results[i] = rows
            return len(done)
        for (i, _), rows in zip(done, msg, strict=True):
            results[i] = rows
        sel.unregister(w.proc.stdout)
        return len(done)

    def _restart(self, w: _Worker) -> _Worker:
        self._kill(w)
        fresh = self._spawn(w.index)
        fresh.queue = w.queue
        self._workers[w.index] = fresh
        return fresh

    @staticmethod
    def _kill(w: _Worker, grace_s: float = 0.0) -> None:
        if grace_s:
            try:
                w.proc.stdin.close()  # type: ignore[union-attr]
                w.proc.wait(grace_s)
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        w.proc.wait()
        for f in (w.proc.stdin, w.proc.stdout, w.proc.stderr):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def close(self) -> None:
        """Stop every worker (and everything in its process group) and remove the staged worker code."""
        for w in self._workers:
            self._kill(w, grace_s=1.0)
        self._workers = []
        shutil.rmtree(self._stage, ignore_errors=True)
