"""The fork server: a lean process (standard library only) that forks one sandboxed child per job.

Started by :mod:`azr.executor._pool` as ``python -S -s -B -c ...`` (never by forking the trainer), possibly inside
bwrap. It reads length-prefixed JSON requests on fd 0 and answers on fd 1. For each job it forks a child that:
moves into its own process group, gets an empty environment, a fresh working directory, stdin from /dev/null and
stdout/stderr into a capped pipe, rlimits (address space, CPU, file size, open files, processes, no core), drops to
``nobody`` when running as root outside bwrap, installs the seccomp filter, then runs the program and writes one
result row per call to a private result pipe. The worker enforces the wall clock per call and kills the child's
process group when it is over; a child that dies mid-way is replaced by a fresh one for the remaining calls.

Cost per child. On a 2-core VM a bare ``os.fork`` + ``_exit`` + ``wait`` of this interpreter costs ~0.35 ms of CPU;
everything else a child costs is mostly copy-on-write page faults (~2.5 µs each): every page that the child, or the
worker between two forks, writes to is copied. Hence: programs and inputs are compiled by the worker before the
first fork of a request (compiling runs nothing); the worker forks children in batches, so its own book-keeping
is copied once per batch; limits that are inherited are set once in the worker, and the seccomp policy is split
into a worker filter (installed once, inherited) and a short child filter; the zygote imports little (no ast,
traceback or shutil); result rows are a small text format rather than JSON; stdout writes through, so no flush;
and ``gc.freeze()`` before each batch keeps a child's collections off the worker's objects.
"""

from __future__ import annotations

import builtins
import gc
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import time
from collections import deque

from . import _scratch, _seccomp

_NOBODY = 65534
# The child's code after the program ran uses these, not the builtins, which the program may have replaced.
_len, _int, _type, _list, _callable, _repr, _str = len, int, type, list, callable, repr, str
_cfg: dict = {}
_seq = 0


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _send(fd: int, obj: object) -> None:
    data = json.dumps(obj).encode()
    data = struct.pack(">I", len(data)) + data
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


def _cpu_limit(n_calls: int) -> tuple[int, int]:
    """The child's RLIMIT_CPU (computed in the worker: a child that allocates less copies fewer pages)."""
    cpu = int(_cfg["timeout_s"] * max(1, n_calls)) + 1
    return cpu, cpu


def _child_limits(cpu: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, cpu)
    if not _cfg["seccomp"]:
        resource.setrlimit(
            resource.RLIMIT_NPROC, (64, 64)
        )  # the seccomp filter stops forks in stronger tiers


def _isolate(workdir: bytes, out_w: int, res_w: int, cpu: tuple[int, int]) -> None:
    """Everything the child does to itself before it touches the program."""
    os.setpgid(0, 0)
    os.dup2(_cfg["devnull"], 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, _cfg["maxfd"])  # every other descriptor: the worker's, its other children's pipes
    os.chdir(workdir)
    _cfg["prctl"](1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the worker
    if _cfg["tier"] == "none":
        return
    _child_limits(cpu)
    if _cfg["drop_uid"]:
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
    if _cfg["seccomp"]:
        _cfg["filter"].install(os.getpid())


def _pack_args(*args: object, **kwargs: object) -> tuple[tuple, dict]:
    return args, kwargs


def _one_call(g: dict, entry: str, code: object, expect: str | None) -> list:
    """Run ``entry(<input>)`` in the program's globals, ``code`` being the input compiled by the worker (or the
    error row its compilation gave); returns [status, value, error_type, message, seconds]."""
    if _type(code) is _list:
        return code
    t0 = time.perf_counter()
    try:
        fn = g.get(entry)
        if not _callable(fn):
            return ["error", None, "NameError", f"no function {entry!r} defined", 0.0]
        g["__azr_args__"] = _pack_args  # inputs may name the program's globals, as in CRUXEval
        args, kwargs = eval(code, g)
        del g["__azr_args__"]
        value = fn(*args, **kwargs)
        text = _repr(value)
    except MemoryError:
        return ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
    except BaseException as e:
        return ["error", None, _type(e).__name__, _tb(e), time.perf_counter() - t0]
    dt = time.perf_counter() - t0
    if _len(text) > _cfg["max_out"]:
        return ["output_too_large", None, None, f"result repr has {_len(text)} characters", dt]
    if expect is not None and text != expect.strip():
        from . import _values  # imported here, not in the worker: its ast import makes every fork dearer

        ok, gold = _values.parse_literal(expect)
        if not (ok and _values.values_equal(value, gold)):
            return ["wrong", text, None, f"expected {expect[:200]}", dt]
    return ["ok", text, None, "", dt]


def _tb(e: BaseException) -> str:
    """``Type: message`` (what ``traceback.format_exception_only`` gives, without importing traceback: a child
    that imports a module writes to many more pages)."""
    try:
        text = _str(e)
    except BaseException:
        text = "<exception str() failed>"
    name = _type(e).__name__
    return (f"{name}: {text}" if text else name)[-2000:]


def _compile(text: str, name: str, mode: str) -> object:
    """Compile in the worker (compiling runs nothing): a code object, or the error row the child reports."""
    try:
        return compile(text, name, mode)
    except MemoryError:
        return ["memory", None, "MemoryError", "memory limit reached", 0.0]
    except BaseException as e:  # SyntaxError, ValueError (null bytes), RecursionError, ...
        return ["error", None, _type(e).__name__, _tb(e), 0.0]


def _child(job: dict, calls: list, workdir: bytes, out_w: int, res_w: int, cpu: tuple[int, int]) -> None:
    """Runs in the forked child; never returns. ``job["_code"]`` is the program compiled by the worker, and each
    call's input is compiled there too (once for all the children of a request), so that the child only runs."""
    try:
        try:
            _isolate(workdir, out_w, res_w, cpu)
        except BaseException as e:
            row = _encode(["error", None, "SandboxError", f"isolation failed: {e!r}", 0.0])
            for fd in (3, res_w):  # fd 3 once the result pipe is moved there (res_w is then closed)
                try:
                    os.write(fd, row)
                    break
                except OSError:
                    pass
            raise
        code = job["_code"]
        if _type(code) is _list:  # the program did not compile: that error answers every call
            failed = code
        else:
            g: dict = {"__name__": "__main__", "__builtins__": builtins}
            t0 = time.perf_counter()
            try:
                exec(code, g)
                failed = None
            except MemoryError:
                failed = ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
            except BaseException as e:
                failed = ["error", None, _type(e).__name__, _tb(e), time.perf_counter() - t0]
        if not calls:
            _write_line(failed or ["ok", None, None, "", time.perf_counter() - t0])
        entry = job.get("entry") or "f"
        for inp, expect in calls:
            _write_line(failed or _one_call(g, entry, _cfg["inputs"][inp], expect))
        # no flush: sys.stdout and sys.stderr write through (see _prepare)
    finally:
        os._exit(0)


def _encode(line: list) -> bytes:
    """One result row: ``status nanoseconds len(value)|-1 len(error_type)|-1 len(message) body_bytes\n`` then
    the three texts as one UTF-8 body (lengths in characters). Cheaper in the child than JSON: it writes to
    fewer pages (each one it writes is a copy-on-write fault)."""
    status, value, etype, msg, dt = line
    v = "" if value is None else value
    e = "" if etype is None else etype
    body = (v + e + msg).encode("utf-8", "surrogatepass")
    nv = -1 if value is None else _len(v)
    ne = -1 if etype is None else _len(e)
    return f"{status} {_int(dt * 1e9)} {nv} {ne} {_len(msg)} {_len(body)}\n".encode() + body


def _write_line(line: list) -> None:
    data = _encode(line)
    while data:
        data = data[os.write(3, data) :]


_STATUSES = {"ok", "error", "timeout", "memory", "output_too_large", "wrong"}
_MALFORMED = ["error", None, "SandboxError", "malformed result line from the child", 0.0]


def _parse_rows(buf: bytes) -> tuple[list[list], bytes | None]:
    """Complete result rows at the start of ``buf`` and the unparsed rest; a malformed row ends the stream with
    a SandboxError row (and ``None`` for the rest). The child runs untrusted code and may write anything."""
    rows: list[list] = []
    while True:
        nl = buf.find(b"\n", 0, 128)
        if nl < 0:
            if len(buf) >= 128:
                return [*rows, list(_MALFORMED)], None
            return rows, buf
        try:
            status, ns, nv, ne, nm, nb = buf[:nl].split(b" ")
            status_s = status.decode()
            sizes, nbytes, dt = (int(nv), int(ne), int(nm)), int(nb), int(ns) / 1e9
            if status_s not in _STATUSES or min(sizes) < -1 or sizes[2] < 0 or nbytes < 0:
                raise ValueError
        except (ValueError, UnicodeDecodeError, OverflowError):
            return [*rows, list(_MALFORMED)], None
        end = nl + 1 + nbytes
        if len(buf) < end:
            return rows, buf
        try:
            body = buf[nl + 1 : end].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return [*rows, list(_MALFORMED)], None
        if len(body) != sum(max(0, n) for n in sizes):
            return [*rows, list(_MALFORMED)], None
        fields: list[str | None] = []
        at = 0
        for n in sizes:
            fields.append(None if n < 0 else body[at : at + n])
            at += max(0, n)
        rows.append([status_s, fields[0], fields[1], fields[2], dt])
        buf = buf[end:]


class _Child:
    """Book-keeping for one running child: its pipes, what it has said so far, and its deadline."""

    def __init__(self, index: int, calls: list, jobs: list[dict]) -> None:
        global _seq
        _seq += 1
        self.index, self.job, self.calls = index, jobs[index], calls
        self.workdir = f"{_cfg['base']}/{_seq}"
        _fresh_dir(self.workdir)
        if _cfg["drop_uid"]:
            os.chown(self.workdir, _NOBODY, _NOBODY)
        self.workdir_b, self.cpu = os.fsencode(self.workdir), _cpu_limit(len(calls))
        self.res_r, self.res_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.buf, self.out, self.lines = b"", bytearray(), []
        self.why = ""
        self.pid = 0

    def start(self) -> None:
        """Fork; the child never returns from here."""
        self.pid = os.fork()
        if self.pid == 0:
            _child(self.job, self.calls, self.workdir_b, self.out_w, self.res_w, self.cpu)

    def started(self) -> None:
        """In the worker, after the fork: drop the child's ends of the pipes and start its clock."""
        os.close(self.res_w)
        os.close(self.out_w)
        self.deadline = time.monotonic() + _cfg["timeout_s"]

    def on_output(self, chunk: bytes) -> None:
        self.out += chunk
        if len(self.out) > _cfg["max_out"]:
            self.why = "output"

    def on_result(self, chunk: bytes) -> None:
        if self.buf is None:  # a malformed row was seen: ignore the rest
            return
        done, self.buf = _parse_rows(self.buf + chunk)
        self.lines += done
        if done:
            self.deadline = time.monotonic() + _cfg["timeout_s"]
        if self.buf is not None and len(self.buf) > 4 * _cfg["max_out"] + 65536:
            self.why = "output"

    def finish(self) -> tuple[list[list], list | None]:
        """Kill and reap; returns (rows for the calls it answered, the rest of its calls or None)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        _, wstatus = os.waitpid(self.pid, 0)
        while self.why != "output":
            chunk = os.read(self.out_r, 65536)  # the child is gone: this reaches EOF without blocking
            if not chunk:
                break
            self.on_output(chunk)
        os.close(self.res_r)
        os.close(self.out_r)
        try:
            os.rmdir(self.workdir)
        except OSError:
            _scratch.remove(self.workdir)
        stdout = bytes(self.out[: _cfg["max_out"]]).decode("utf-8", "replace")
        n = max(1, len(self.calls))
        if self.why == "output":  # printed output over the cap: rejected for every call of this child
            return [[*_death("output", 0), stdout] for _ in range(n)], None
        rows = [[*line, stdout] for line in self.lines[:n]]
        if len(rows) >= n:
            return rows, None
        rows.append([*_death(self.why, wstatus), stdout])
        rest = self.calls[len(rows) :]
        return rows, rest or None


_active: dict[int, _Child] = {}  # read fd -> child


def run_jobs(jobs: list[dict], parallel: int) -> list[list[list]]:
    """Answer all jobs, with up to ``parallel`` children running at once; a child that dies mid-way is replaced by
    a fresh one for the calls after the one it died on."""
    results: list[list[list]] = [[] for _ in jobs]
    inputs: dict[str, object] = {}
    for job in jobs:  # compile everything before the first fork (no child shares the worker's pages yet)
        job["_code"] = _compile(job["code"], "<program>", "exec")
        for inp, _ in job.get("calls") or ():
            if inp not in inputs:
                inputs[inp] = _compile(f"__azr_args__({inp}\n)", "<input>", "eval")
    _cfg["inputs"] = inputs
    pending = deque((i, [tuple(c) for c in job.get("calls") or ()]) for i, job in enumerate(jobs))
    poller = select.poll()
    parallel = max(1, min(parallel, 12))  # 4 descriptors per child at fork time; the worker may hold 64
    refill = max(1, parallel // 2)
    while pending or _active:
        free = parallel - len(_active) // 2
        if pending and free >= min(refill, len(pending)):
            # Fork several children back to back: after each fork every page the worker writes is copied
            # (copy-on-write), so the book-keeping below is paid once per batch of forks, not once per child.
            batch = [_Child(*pending.popleft(), jobs=jobs) for _ in range(min(free, len(pending)))]
            gc.freeze()  # the worker's young objects too: a child's collections must not walk (and copy) them
            for c in batch:
                c.start()
            for c in batch:
                c.started()
                _active[c.res_r] = _active[c.out_r] = c
                poller.register(c.res_r, select.POLLIN)
                poller.register(c.out_r, select.POLLIN)
        now = time.monotonic()
        wait = max(0.0, min(c.deadline for c in _active.values()) - now)
        for fd, _ in poller.poll(wait * 1000):
            c = _active.get(fd)
            if c is None or c.why:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                if fd == c.res_r:
                    c.why = "done"
            else:
                (c.on_output if fd == c.out_r else c.on_result)(chunk)
        now = time.monotonic()
        ended = {c for c in _active.values() if c.why or c.deadline <= now}
        for c in ended:
            c.why = c.why or "timeout"
            for fd in (c.res_r, c.out_r):
                _active.pop(fd, None)
                try:
                    poller.unregister(fd)
                except KeyError:
                    pass
            rows, rest = c.finish()
            results[c.index] += rows
            if rest is not None:
                pending.appendleft((c.index, rest))
        if ended:  # before the next fork: no job finds what an ended one left behind
            _scratch.sweep(_cfg["base"], {os.path.basename(c.workdir) for c in _active.values()})
    return results


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
        return ["error", None, "Killed", f"killed by signal {signal.Signals(sig).name}", 0.0]
    code = os.WEXITSTATUS(wstatus) if os.WIFEXITED(wstatus) else -1
    return ["error", None, "SystemExit", f"process exited (status {code}) without a result", 0.0]


def _fresh_dir(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # planted by an earlier child: replace it
        _scratch.remove(path)
        os.mkdir(path, 0o700)


def _warm_up() -> None:
    """Run the child's code path (minus the isolation) in the worker, so that the interpreter's adaptive caches
    are already specialised when a child starts: a child then writes to fewer shared pages (copy-on-write)."""
    g: dict = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile("def f(a):\n    return a", "<program>", "exec"), g)
    code = _compile("__azr_args__([1, 'a']\n)", "<input>", "eval")
    for _ in range(64):
        line = _one_call(g, "f", code, None)
        _parse_rows(_encode(line) + _encode(["error", None, "ValueError", _tb(ValueError("x")), 0.5]))


def _prepare() -> None:
    """Make the worker itself harder to attack from its children: not dumpable, dies with its parent."""
    _seccomp.prctl(4, 0)  # PR_SET_DUMPABLE = 0: no /proc/<worker>/mem access for same-uid children
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
    # a child closes every descriptor from 4 up to the worker's limit (64 in the sandboxed tiers)
    _cfg["maxfd"] = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)
    _cfg["prctl"] = _seccomp.libc_prctl()
    tmp = "/dev/shm" if os.access("/dev/shm", os.W_OK) and _cfg["tier"] != "bwrap" else "/tmp"
    base = _cfg.get("base") or f"{tmp}/azr-sandbox-{os.getpid()}"
    os.makedirs(base, mode=0o711, exist_ok=True)
    _cfg["base"] = base
    if _cfg["tier"] == "bwrap":  # inside bwrap these are private to this worker, and writable by its children
        _scratch.snapshot(["/tmp", "/dev/shm", "/var/tmp", *_cfg.get("scratch", [])])
    _warm_up()
    if _cfg["seccomp"]:
        _cfg["filter"] = _seccomp.Prepared("child")
        _seccomp.install_worker()  # inherited by every child, which then adds the short child filter
    gc.collect()
    gc.freeze()  # children's collections then skip the zygote's objects (fewer copy-on-write faults)


def main() -> None:
    """Serve requests until fd 0 closes. The config is a JSON object in ``sys.argv[1]``."""
    _cfg.update(json.loads(sys.argv[1]))
    _prepare()
    _send(1, {"ready": os.getpid()})
    served = 0
    while True:
        try:
            (n,) = struct.unpack(">I", _read_exact(0, 4))
            request = json.loads(_read_exact(0, n))
        except EOFError:
            break
        _send(1, run_jobs(request["jobs"], int(_cfg.get("parallel", 8))))
        served += 1
        if (
            served % 256 == 0
        ):  # run_jobs freezes what the worker allocated; collect its cyclic garbage now and then
            gc.unfreeze()
            gc.collect()
            gc.freeze()
    _scratch.remove(_cfg["base"])
