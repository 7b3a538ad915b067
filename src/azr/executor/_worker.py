"""The fork server: a lean process (standard library only) that forks one sandboxed child per job.

Started by :mod:`azr.executor._pool` as ``python -S -s -B -c ...`` (never by forking the trainer), possibly inside
bwrap. It reads length-prefixed JSON requests on fd 0 and answers on fd 1. For each job it forks a child that:
moves into its own process group, gets an empty environment, a fresh working directory, stdin from /dev/null and
stdout/stderr into a capped pipe, rlimits (address space, CPU, file size, open files, processes, no core), drops to
``nobody`` when running as root outside bwrap, installs the seccomp filter, then runs the program and writes one
JSON line per call to a private result pipe. The worker enforces the wall clock per call and kills the child's
process group when it is over; a child that dies mid-way is replaced by a fresh one for the remaining calls.
"""

from __future__ import annotations

import builtins
import json
import os
import resource
import select
import shutil
import signal
import struct
import sys
import time
import traceback

from . import _seccomp, _values

_NOBODY = 65534
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


def _limits(n_calls: int) -> None:
    mb = _cfg["memory_mb"] * 1024 * 1024
    cpu = int(_cfg["timeout_s"] * max(1, n_calls)) + 1
    for which, value in (
        (resource.RLIMIT_AS, mb),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, _cfg["max_file_bytes"]),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_NPROC, 64),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))


def _isolate(workdir: str, out_w: int, res_w: int, n_calls: int) -> None:
    """Everything the child does to itself before it touches the program."""
    os.setpgid(0, 0)
    os.dup2(_cfg["devnull"], 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    os.dup2(res_w, 3)
    os.closerange(4, 1 << 16)
    os.chdir(workdir)
    os.environ.clear()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _seccomp.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the worker
    if _cfg["tier"] == "none":
        return
    _limits(n_calls)
    if _cfg["drop_uid"]:
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
    if _cfg["seccomp"]:
        _seccomp.install(os.getpid())


def _one_call(g: dict, entry: str, inp: str, expect: str | None) -> list:
    """Run ``entry(inp)`` in the program's globals; returns [status, value, error_type, message, seconds]."""
    t0 = time.perf_counter()
    try:
        fn = g.get(entry)
        if not callable(fn):
            return ["error", None, "NameError", f"no function {entry!r} defined", 0.0]
        ns = {"__builtins__": builtins, "__azr_args__": lambda *a, **k: (a, k)}
        args, kwargs = eval(compile(f"__azr_args__({inp}\n)", "<input>", "eval"), ns)
        value = fn(*args, **kwargs)
        text = repr(value)
    except MemoryError:
        return ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
    except BaseException as e:
        return ["error", None, type(e).__name__, _tb(e), time.perf_counter() - t0]
    dt = time.perf_counter() - t0
    if len(text) > _cfg["max_out"]:
        return ["output_too_large", None, None, f"result repr has {len(text)} characters", dt]
    if expect is not None and text != expect.strip():
        ok, gold = _values.parse_literal(expect)
        if not (ok and _values.values_equal(value, gold)):
            return ["wrong", text, None, f"expected {expect[:200]}", dt]
    return ["ok", text, None, "", dt]


def _tb(e: BaseException) -> str:
    lines = traceback.format_exception_only(type(e), e)
    return "".join(lines).strip()[-2000:]


def _child(job: dict, calls: list, workdir: str, out_w: int, res_w: int) -> None:
    try:
        try:
            _isolate(workdir, out_w, res_w, len(calls))
        except BaseException as e:
            os.write(
                res_w,
                (
                    json.dumps(["error", None, "SandboxError", f"isolation failed: {e!r}", 0.0]) + "\n"
                ).encode(),
            )
            raise
        g: dict = {"__name__": "__main__", "__builtins__": builtins}
        t0 = time.perf_counter()
        try:
            exec(compile(job["code"], "<program>", "exec"), g)
            failed = None
        except MemoryError:
            failed = ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
        except BaseException as e:
            failed = ["error", None, type(e).__name__, _tb(e), time.perf_counter() - t0]
        if not calls:
            line = failed or ["ok", None, None, "", time.perf_counter() - t0]
            _write_line(line)
        for inp, expect in calls:
            _write_line(failed or _one_call(g, job.get("entry") or "f", inp, expect))
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(0)


def _write_line(line: list) -> None:
    data = (json.dumps(line) + "\n").encode()
    while data:
        data = data[os.write(3, data) :]


def _collect(pid: int, res_r: int, out_r: int, n_expected: int) -> tuple[list[list], bytes, str]:
    """Read result lines and captured output until the child is done; returns (lines, output, why_stopped)."""
    poller = select.poll()
    poller.register(res_r, select.POLLIN)
    poller.register(out_r, select.POLLIN)
    open_fds = {res_r, out_r}
    buf, out, lines = b"", bytearray(), []
    deadline = time.monotonic() + _cfg["timeout_s"]
    why = ""
    while res_r in open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            why = "timeout"
            break
        for fd, _ in poller.poll(left * 1000):
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
            elif fd == out_r:
                out += chunk
                if len(out) > _cfg["max_out"]:
                    why = "output"
            else:
                buf += chunk
                *done, buf = buf.split(b"\n")
                lines += [_parse_line(d) for d in done]
                if done:
                    deadline = time.monotonic() + _cfg["timeout_s"]
        if why or len(buf) > 4 * _cfg["max_out"] + 65536:
            why = why or "output"
            break
    return lines[:n_expected], bytes(out[: _cfg["max_out"]]), why


_STATUSES = {"ok", "error", "timeout", "memory", "output_too_large", "wrong"}


def _parse_line(data: bytes) -> list:
    """A child's result line, checked: the child runs untrusted code and may write anything."""
    try:
        line = json.loads(data)
        status, value, etype, msg, dt = line
        if (
            status in _STATUSES
            and all(isinstance(x, str | None) for x in (value, etype))
            and isinstance(msg, str)
        ):
            return [status, value, etype, msg, float(dt)]
    except (ValueError, TypeError, RecursionError):
        pass
    return ["error", None, "SandboxError", "malformed result line from the child", 0.0]


def _run_child(job: dict, calls: list) -> tuple[list[list], bytes, str, int]:
    global _seq
    _seq += 1
    workdir = f"{_cfg['base']}/{_seq}"
    os.mkdir(workdir, 0o700)
    if _cfg["drop_uid"]:
        os.chown(workdir, _NOBODY, _NOBODY)
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(job, calls, workdir, out_w, res_w)
    os.close(res_w)
    os.close(out_w)
    try:
        lines, out, why = _collect(pid, res_r, out_r, max(1, len(calls)))
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _, wstatus = os.waitpid(pid, 0)
        os.close(res_r)
        os.close(out_r)
        try:
            os.rmdir(workdir)
        except OSError:
            shutil.rmtree(workdir, ignore_errors=True)
    return lines, out, why, wstatus


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


def run_job(job: dict) -> list[list]:
    """All calls of one job; a child that dies is replaced by a fresh one for the calls after the one it died on."""
    calls = job.get("calls")
    pending = [tuple(c) for c in calls] if calls is not None else []
    results: list[list] = []
    while True:
        lines, out, why, wstatus = _run_child(job, pending)
        stdout = out.decode("utf-8", "replace")
        results += [[*line, stdout] for line in lines]
        if len(lines) >= max(1, len(pending)):
            return results
        results.append([*_death(why, wstatus), stdout])
        pending = pending[len(lines) + 1 :]
        if not pending:
            return results


def _prepare() -> None:
    """Make the worker itself harder to attack from its children: not dumpable, dies with its parent."""
    _seccomp.prctl(4, 0)  # PR_SET_DUMPABLE = 0: no /proc/<worker>/mem access for same-uid children
    _seccomp.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the process that started us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _cfg["devnull"] = os.open(os.devnull, os.O_RDONLY)
    base = _cfg.get("base") or f"/tmp/azr-sandbox-{os.getpid()}"
    os.makedirs(base, mode=0o711, exist_ok=True)
    _cfg["base"] = base
    _values.parse_literal("[1]")  # warm the parser before the first fork


def main() -> None:
    """Serve requests until fd 0 closes. The config is a JSON object in ``sys.argv[1]``."""
    _cfg.update(json.loads(sys.argv[1]))
    _prepare()
    _send(1, {"ready": os.getpid()})
    while True:
        try:
            (n,) = struct.unpack(">I", _read_exact(0, 4))
            request = json.loads(_read_exact(0, n))
        except EOFError:
            break
        _send(1, [run_job(job) for job in request["jobs"]])
    shutil.rmtree(_cfg["base"], ignore_errors=True)
