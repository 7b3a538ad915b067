"""Live checks of what the sandbox stops on this machine (``azr selfcheck``): each probe runs as a job and
reports whether the attempt failed, and how."""

from __future__ import annotations

from ._types import Status

_PROBE = """
import os
def f(a):
    try:
{body}
    except BaseException as e:
        return [True, type(e).__name__ + ": " + str(e)[:80]]
    return [False, "it worked"]
"""
_PROBES: dict[str, str] = {
    "no network": "import _socket\n_socket.socket()",
    "no new process": "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)",
    "no new thread": "import _thread\n_thread.start_new_thread(lambda: None, ())",
    "no signal to the worker": "os.kill(os.getppid(), 0)",
    "worker's limits out of reach": "import resource\nresource.prlimit(os.getppid(), resource.RLIMIT_NOFILE)",
    "worker's memory out of reach": "open(f'/proc/{os.getppid()}/mem', 'rb').close()",
    "no file created": (
        "made = []\nfor d in ('/tmp', '/dev/shm', '/var/tmp', '.'):\n"
        "    p = os.path.join(d, f'azr-probe-{os.getpid()}')\n    try:\n"
        "        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n        os.unlink(p)\n"
        "        made.append(d)\n    except OSError:\n        pass\n"
        "if not made:\n    raise PermissionError('denied in /tmp, /dev/shm, /var/tmp and the working directory')"
    ),
    "no other process visible": (
        "pids = [p for p in os.listdir('/proc') if p.isdigit() and p != str(os.getpid())]\n"
        "if not pids:\n    raise LookupError('/proc lists no other process')"
    ),
}


def check_protections(tier: str | None = None) -> list[tuple[str, bool, str]]:
    """Run every probe in a fresh executor of ``tier`` (default: the strongest here); returns (protection, held,
    how the attempt ended). The guarantees that hold by construction (a child holds only its own job, rows are
    checked by the worker, per-call deadlines) are in the threat model, :mod:`azr.executor`."""
    from azr.config import ExecutorConfig

    from ._executor import Executor
    from ._values import parse_literal

    programs = [
        _PROBE.format(body="\n".join("        " + line for line in b.splitlines())) for b in _PROBES.values()
    ]
    cfg = ExecutorConfig(timeout_s=5.0, workers=1, determinism_runs=1)
    with Executor(cfg, tier=tier) as ex:
        results = ex.run_many([(p, "0") for p in programs])
    out = []
    for name, r in zip(_PROBES, results, strict=True):
        ok, value = parse_literal(r.value) if r.status is Status.OK and r.value else (False, None)
        if ok and isinstance(value, list) and len(value) == 2:
            out.append((name, bool(value[0]), str(value[1])))
        else:  # the probe itself did not finish (killed, timed out): the attempt did not get through
            out.append((name, r.status is not Status.OK, f"{r.status.value}: {r.message[:80]}"))
    return out
