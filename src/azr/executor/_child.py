"""What a sandboxed child does (standard library only: the sandbox worker imports it).

A child is forked by the zygote (:mod:`._zygote`), a process that has never held any job's data, so a child holds
only its own job. It moves into its own process group, takes its descriptors (stdin from /dev/null, stdout and
stderr into its output pipe, the result pipe as fd 3), reads its one job from its job pipe, isolates itself (CPU
limit, a uid of its own when running as root outside bwrap, the parent-death signal, the seccomp child filter),
then compiles and runs the program and writes one result row per call to fd 3.

Result rows are a small text format (cheaper than JSON: a child that writes fewer pages copies fewer of them):
``status nanoseconds len(value)|-1 len(error_type)|-1 len(message) body_bytes\\n`` then the three texts as one UTF-8
body (lengths in characters). The worker parses them as untrusted input (:func:`parse_rows`).
"""

from __future__ import annotations

import builtins
import json
import marshal
import os
import resource
import signal
import struct
import time

# The child's code after the program ran uses these, not the builtins, which the program may have replaced.
_len, _int, _type, _list, _callable, _repr, _str = len, int, type, list, callable, repr, str
CHILD_STATUSES = frozenset({"ok", "error", "memory", "output_too_large"})
"""The statuses a child may report; ``timeout`` and the rest are the worker's verdicts."""
MAX_MESSAGE = 2000
MAX_ERROR_TYPE = 100
_CLONE_NEWIPC = 0x08000000
_max_out = 10_000  # the result-size cap (the worker's max_out), set in each child from the worker's config


def read_message(fd: int) -> object:
    """One length-prefixed JSON message from ``fd``; raises EOFError when it ends early."""
    (n,) = struct.unpack(">I", _read_exact(fd, 4))
    return json.loads(_read_exact(fd, n))


def job_payload(code: str, entry: str | None, calls: list[str] | None, cpu: int, uid: int | None) -> bytes:
    """A child's job as the worker sends it: the program and every call's arguments compiled by the worker
    (compiling runs nothing; a child that only unmarshals its code objects is cheaper than one that compiles),
    or the error rows their compilation gave, in ``marshal`` format behind a length."""
    inputs = None if calls is None else [_compile(f"__azr_args__({i}\n)", "<input>", "eval") for i in calls]
    data = marshal.dumps((_compile(code, "<program>", "exec"), entry or "f", inputs, cpu, uid))
    return struct.pack(">I", len(data)) + data


def _read_job(fd: int) -> tuple:
    data = os.read(fd, 65536)  # usually the whole job: it was written before the fork
    if len(data) < 4:
        data += _read_exact(fd, 4 - len(data))
    (n,) = struct.unpack(">I", data[:4])
    if len(data) < 4 + n:
        data += _read_exact(fd, 4 + n - len(data))
    return marshal.loads(data[4 : 4 + n])


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def frame(obj: object) -> bytes:
    """``obj`` as a length-prefixed JSON message."""
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def _isolate(cfg: dict, cpu: int, uid: int | None, zygote: int) -> None:
    """Everything the child does to itself before it touches the program (its descriptors are already set)."""
    if cfg["tier"] != "none":
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        if not cfg["seccomp"]:  # the seccomp filter stops forks and threads in the stronger tiers
            nproc = 1 if uid is not None else 64  # a uid of its own: no second process at all
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if uid is not None:
            if not cfg["seccomp"] and cfg["unshare"](_CLONE_NEWIPC) != 0:  # its IPC objects die with it
                raise OSError("unshare(CLONE_NEWIPC) failed: no private IPC namespace for this job")
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
    # after the uid change, which clears it; then make sure the zygote did not die before it was set
    cfg["prctl"](1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != zygote:
        os._exit(0)
    if cfg["seccomp"]:
        cfg["filter"].install(os.getpid())


def child_main(cfg: dict, fds: tuple[int, int, int], zygote: int) -> None:
    """Runs in the forked child; never returns. ``fds`` are its job pipe (read end), result pipe and output pipe
    (write ends), as passed to the zygote."""
    global _max_out
    job_r, res_w, out_w = fds
    _max_out = cfg["max_out"]
    try:  # the zygote has made it a process group leader before the worker learns its pid
        try:
            program, entry, inputs, cpu, uid = _read_job(job_r)
            os.dup2(res_w, 3)
            os.dup2(cfg["devnull"], 0)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.closerange(4, cfg["maxfd"])  # the job pipe, the zygote's socket, any other descriptor
            _isolate(cfg, cpu, uid, zygote)
        except BaseException as e:
            row = encode_row(["error", None, "SandboxError", f"isolation failed: {e!r}", 0.0])
            for fd in (res_w, 3):  # fd 3 once the result pipe is moved there (res_w is then closed)
                try:
                    os.write(fd, row)
                    break
                except OSError:
                    pass
            raise
        _run(program, entry, inputs)
    finally:
        os._exit(0)


def _run(program: object, entry: str, inputs: list | None, fd: int = 3) -> None:
    """Run the job's program, then each call; one row per call (one row if there are none) to ``fd``."""
    t0 = time.perf_counter()
    g: dict = {"__name__": "__main__", "__builtins__": builtins}
    failed = program if _type(program) is _list else None
    if failed is None:
        try:
            exec(program, g)  # type: ignore[arg-type]
        except MemoryError:
            failed = ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
        except BaseException as e:
            failed = ["error", None, _type(e).__name__, _tb(e), time.perf_counter() - t0]
    if inputs is None:
        _write_row(failed or ["ok", None, None, "", time.perf_counter() - t0], fd)
        return
    for code in inputs:
        _write_row(failed or _one_call(g, entry, code), fd)
    # no flush: sys.stdout and sys.stderr write through (see the worker's _prepare)


def _pack_args(*args: object, **kwargs: object) -> tuple[tuple, dict]:
    return args, kwargs


def _one_call(g: dict, entry: str, code: object) -> list:
    """Run ``entry(<input>)`` in the program's globals, ``code`` being the compiled input (or the error row its
    compilation gave); returns [status, value, error_type, message, seconds]."""
    if _type(code) is _list:
        return code  # type: ignore[return-value]
    t0 = time.perf_counter()
    try:
        fn = g.get(entry)
        if not _callable(fn):
            return ["error", None, "NameError", f"no function {entry!r} defined", 0.0]
        g["__azr_args__"] = _pack_args  # inputs may name the program's globals, as in CRUXEval
        args, kwargs = eval(code, g)  # type: ignore[arg-type]
        del g["__azr_args__"]
        value = fn(*args, **kwargs)
        text = _repr(value)
    except MemoryError:
        return ["memory", None, "MemoryError", "memory limit reached", time.perf_counter() - t0]
    except BaseException as e:
        return ["error", None, _type(e).__name__, _tb(e), time.perf_counter() - t0]
    dt = time.perf_counter() - t0
    if _len(text) > _max_out:  # checked here to spare the pipe, and again by the worker (it trusts no row)
        return ["output_too_large", None, None, f"result repr has {_len(text)} characters", dt]
    return ["ok", text, None, "", dt]


def _tb(e: BaseException) -> str:
    """``Type: message`` (what ``traceback.format_exception_only`` gives, without importing traceback: a child
    that imports a module writes to many more pages)."""
    try:
        text = _str(e)
    except BaseException:
        text = "<exception str() failed>"
    name = _type(e).__name__
    return (f"{name}: {text}" if text else name)[-MAX_MESSAGE:]


def _compile(text: str, name: str, mode: str) -> object:
    """A code object, or the error row the compilation gave (compiling runs nothing)."""
    try:
        return compile(text, name, mode)
    except MemoryError:
        return ["memory", None, "MemoryError", "memory limit reached", 0.0]
    except BaseException as e:  # SyntaxError, ValueError (null bytes), RecursionError, ...
        return ["error", None, _type(e).__name__, _tb(e), 0.0]


def encode_row(line: list) -> bytes:
    """One result row in the text format of the module docstring."""
    status, value, etype, msg, dt = line
    v = "" if value is None else value
    e = "" if etype is None else _str(etype)[:MAX_ERROR_TYPE]
    msg = msg[-MAX_MESSAGE:]
    body = (v + e + msg).encode("utf-8", "surrogatepass")
    nv = -1 if value is None else _len(v)
    ne = -1 if etype is None else _len(e)
    return f"{status} {_int(dt * 1e9)} {nv} {ne} {_len(msg)} {_len(body)}\n".encode() + body


def _write_row(line: list, fd: int = 3) -> None:
    data = encode_row(line)
    while data:
        data = data[os.write(fd, data) :]


def parse_rows(buf: bytes, max_value: int) -> tuple[list[list], bytes | None]:
    """Complete result rows at the start of ``buf`` and the unparsed rest. The child runs untrusted code and may
    write anything to its result pipe, so every field is checked here, in the worker: a malformed or oversized
    row, or a status only the worker may give, ends the stream with a SandboxError row (and ``None`` for the
    rest); a value longer than ``max_value`` characters becomes an OUTPUT_TOO_LARGE row."""
    rows: list[list] = []
    max_body = 4 * (max_value + MAX_ERROR_TYPE + MAX_MESSAGE)
    while True:
        nl = buf.find(b"\n", 0, 128)
        if nl < 0:
            return (rows, buf) if len(buf) < 128 else ([*rows, malformed()], None)
        try:
            status, ns, nv, ne, nm, nb = buf[:nl].split(b" ")
            status_s = status.decode()
            sizes, nbytes, dt = (int(nv), int(ne), int(nm)), int(nb), int(ns) / 1e9
            if (
                status_s not in CHILD_STATUSES
                or not (sizes[0] >= -1 and -1 <= sizes[1] <= MAX_ERROR_TYPE and 0 <= sizes[2] <= MAX_MESSAGE)
                or not 0 <= nbytes <= max_body
                or not 0 <= dt < 1e6
            ):
                raise ValueError
        except (ValueError, UnicodeDecodeError, OverflowError):
            return [*rows, malformed()], None
        end = nl + 1 + nbytes
        if len(buf) < end:
            return rows, buf
        try:
            body = buf[nl + 1 : end].decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return [*rows, malformed()], None
        if len(body) != sum(max(0, n) for n in sizes):
            return [*rows, malformed()], None
        fields: list[str | None] = []
        at = 0
        for n in sizes:
            fields.append(None if n < 0 else body[at : at + n])
            at += max(0, n)
        if fields[0] is not None and len(fields[0]) > max_value:
            status_s, fields = (
                "output_too_large",
                [None, None, f"result repr has {len(fields[0])} characters"],
            )
        rows.append([status_s, fields[0], fields[1], fields[2], dt])
        buf = buf[end:]


def malformed() -> list:
    return ["error", None, "SandboxError", "malformed result row from the child", 0.0]


def warm_up() -> None:
    """Run the child's code path (minus the isolation) here, through a pipe, so that the interpreter's adaptive
    caches are specialised before the zygote forks: a child then writes to fewer shared pages (copy-on-write)."""
    payload = job_payload("def f(a):\n    return a", "f", ["[1, 'a']"], 1, None)
    r, w = os.pipe()
    try:
        for _ in range(64):
            os.write(w, payload)
            program, entry, inputs, _cpu, _uid = _read_job(r)
            _run(program, entry, inputs, w)
            _run(program, entry, None, w)
            parse_rows(os.read(r, 65536), 100)
            parse_rows(encode_row(["error", None, "ValueError", _tb(ValueError("x")), 0.5]), 100)
    finally:
        os.close(r)
        os.close(w)
