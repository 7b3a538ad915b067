"""Verdict integrity against hostile jobs, in every sandbox tier this machine has (bwrap, seccomp, rlimits).

Each test is an attack of one class from the sandbox's threat model (``azr.executor``), written as the policy
could write it (the programs bypass the static check: ``Executor.run_jobs`` does not apply it). Cross-job tests
run the attack and then honest jobs in the SAME worker (``workers=1``), in the same request (concurrent siblings)
and in the next one; the honest jobs' results must be exactly those of a fresh executor.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.config import ExecutorConfig
from azr.executor import ExecResult, Executor, available_tiers
from proc_helpers import children, descendants

TIERS = [t for t in ("bwrap", "seccomp", "rlimits") if t in available_tiers()]
CFG = ExecutorConfig(timeout_s=1.0, memory_mb=256, max_output_chars=2000, workers=1, determinism_runs=1)

# What an honest job can observe of its worker and host: limits, scheduling, descriptors, files and IPC objects
# a job could plant, and whether 100 MB of memory and a second of CPU are still there.
OBSERVER = r"""
import ctypes, os, resource
def f(a):
    libc = ctypes.CDLL(None, use_errno=True)
    seen = {}
    seen["limits"] = [resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU,
                      resource.RLIMIT_NOFILE, resource.RLIMIT_FSIZE, resource.RLIMIT_NPROC)]
    seen["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
    seen["affinity"] = sorted(os.sched_getaffinity(0))
    seen["scheduler"] = os.sched_getscheduler(0)
    seen["fds"] = [fd for fd in range(64) if _open(fd)]
    seen["planted"] = sorted(os.path.join(d, n) for d in ("/tmp", "/dev", "/dev/shm", "/var/tmp", "/", "/run/lock")
                             if os.path.isdir(d) for n in _list(d) if "azr-planted" in n)
    seen["msgq"] = libc.msgget(0x7A7A01, 0) >= 0
    seen["shm"] = libc.shmget(0x7A7A02, 0, 0) >= 0
    seen["mq"] = libc.mq_open(b"/azr-planted", os.O_RDONLY) >= 0
    seen["memory"] = len(bytearray(100 << 20))
    seen["cpu"] = sum(range(3 * 10**6))
    return seen
def _open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
def _list(d):
    try:
        return os.listdir(d)
    except OSError:
        return []
"""
HONEST = [
    ("def f(a):\n    return sorted(a)", "[3, 1, 2]"),
    ("def f(s):\n    return {c: s.count(c) for c in sorted(set(s))}", "'banana'"),
    (OBSERVER, "0"),
]


def _jobs(items: list[tuple[str, str]]) -> list[dict]:
    return [{"code": code, "calls": [arg], "entry": "f"} for code, arg in items]


def _key(r: ExecResult) -> tuple:
    return (r.status, r.value, r.error_type)


@pytest.fixture(scope="module", autouse=True)
def _attack_modules() -> Iterator[None]:
    """In the fallback tiers run as root a job has a uid of its own and cannot import modules from a root-only
    standard library; the workers preload what the attacks use, so that they test the kernel, not the import."""
    os.environ["AZR_SANDBOX_PRELOAD"] = "ctypes fcntl resource gc _thread"
    yield
    del os.environ["AZR_SANDBOX_PRELOAD"]


@pytest.fixture(scope="module", params=TIERS)
def tier(request: pytest.FixtureRequest) -> str:
    if request.param == "rlimits" and os.geteuid() != 0:
        pytest.skip("rlimits run as a non-root user is resource limits only (see the threat model)")
    return request.param


@pytest.fixture(scope="module")
def fresh(tier: str) -> list[tuple]:
    """The honest jobs' results from a fresh executor of this tier (all of them must run)."""
    with Executor(CFG, tier=tier) as ex:
        rows = [r[0] for r in ex.run_jobs(_jobs(HONEST))]
    assert all(r.ok for r in rows), rows
    return [_key(r) for r in rows]


@pytest.fixture
def ex(tier: str) -> Iterator[Executor]:
    with Executor(CFG, tier=tier) as executor:
        yield executor


def assert_no_effect(ex: Executor, attack: str, fresh: list[tuple], arg: str = "0") -> list[ExecResult]:
    """Run ``attack`` with the honest jobs after it in the same request, then the honest jobs alone in the next
    request, all in one worker; both times their results must be a fresh executor's. Returns the attack's rows."""
    rows = ex.run_jobs(_jobs([(attack, arg), *HONEST]))
    assert rows[0][0].error_type not in ("ModuleNotFoundError", "ImportError"), rows[0][0]
    assert [_key(r[0]) for r in rows[1:]] == fresh, "an honest job in the same request changed"
    assert [_key(r[0]) for r in ex.run_jobs(_jobs(HONEST))] == fresh, (
        "an honest job in the next request changed"
    )
    return rows[0]


# 1. The worker (bwrap's pid 1 before) and its descriptors are out of reach.

PROC_ATTACK = r"""
import os
def f(a):
    done = []
    pids = [p for p in os.listdir("/proc") if p.isdigit()] if os.path.isdir("/proc") else []
    for pid in ["1", str(os.getppid()), *pids]:
        if pid == str(os.getpid()):
            continue
        for name, mode in (("mem", "r+b"), ("fd/0", "rb"), ("fd/1", "wb"), ("fd/2", "wb"), ("oom_score_adj", "w")):
            try:
                with open(f"/proc/{pid}/{name}", mode, buffering=0) as fh:
                    if "r" in mode and "+" not in mode:
                        fh.read(1)
                    else:
                        fh.write(b"\0\0\0\x05hello" if name != "oom_score_adj" else b"1000")
                done.append(f"{pid}/{name}")
            except (OSError, ValueError):
                pass
    return done
"""


def test_worker_and_other_processes_are_out_of_reach(ex: Executor, fresh: list[tuple]) -> None:
    rows = assert_no_effect(ex, PROC_ATTACK, fresh)
    assert rows[0].ok and rows[0].value == "[]", rows[0]


def test_job_inherits_only_its_own_descriptors(ex: Executor) -> None:
    program = "import os\ndef f(a):\n    return [fd for fd in range(1024) if _ok(fd)]\ndef _ok(fd):\n    try:\n        os.fstat(fd)\n        return True\n    except OSError:\n        return False"
    assert ex.run(program, "0").value == "[0, 1, 2, 3]"


def test_bwrap_job_sees_no_processes(tier: str, ex: Executor) -> None:
    if tier != "bwrap":
        pytest.skip("the fallback tiers share the host's /proc (see the threat model)")
    assert ex.run("import os\ndef f(a):\n    return os.listdir('/proc')", "0").value == "[]"


def test_trainer_memory_is_out_of_reach(ex: Executor) -> None:
    program = (
        "def f(pid):\n    out = []\n    for name in ('mem', 'environ', 'fd/0'):\n        try:\n"
        "            with open(f'/proc/{pid}/{name}', 'rb') as fh:\n                fh.read(1)\n"
        "            out.append(name)\n        except OSError:\n            pass\n    return out"
    )
    assert ex.run(program, str(os.getpid())).value == "[]"


# 2. Signals and scheduling through allowed syscalls.

SIGNAL_ATTACK = r"""
import ctypes, fcntl, os, resource, signal
def f(a):
    libc = ctypes.CDLL(None, use_errno=True)
    targets = sorted({os.getppid(), 1, -os.getpgrp(), -os.getppid()})
    for fd in (1, 2, 3):
        for t in targets:
            for step in (lambda: fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGKILL),
                         lambda: fcntl.fcntl(fd, fcntl.F_SETOWN, t),
                         lambda: libc.ioctl(fd, 0x8901, ctypes.byref(ctypes.c_int(t))),  # FIOSETOWN
                         lambda: fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)):
                try:
                    step()
                except OSError:
                    pass
    for pid in (os.getppid(), 1):
        for step in (lambda: resource.prlimit(pid, resource.RLIMIT_AS, (1 << 20, 1 << 20)),
                     lambda: resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1)),
                     lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (4, 4)),
                     lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
                     lambda: os.sched_setaffinity(pid, {0}),
                     lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)),
                     lambda: libc.syscall(251, 1, pid, (3 << 13) | 7)):  # ioprio_set: idle class
            try:
                step()
            except OSError:
                pass
    for which in (os.PRIO_PGRP, os.PRIO_USER):
        try:
            os.setpriority(which, 0, 19)
        except OSError:
            pass
    os.write(1, b"x" * 100)  # I/O on the O_ASYNC descriptors: SIGIO (or SIGKILL) to their owner
    return "done"
"""


def test_signals_and_scheduling_cannot_reach_the_worker_or_siblings(ex: Executor, fresh: list[tuple]) -> None:
    pids = ex.worker_pids
    assert_no_effect(ex, SIGNAL_ATTACK, fresh)
    assert ex.worker_pids == pids, "the worker was killed"


# 3. The worker's row protocol.

ROW = "b'ok 0 1 -1 0 1\\n7'"


def test_rows_cannot_buy_time(ex: Executor) -> None:
    program = (
        f"import os, time\ndef f(a):\n    while True:\n        os.write(3, {ROW})\n        time.sleep(0.3)"
    )
    t0 = time.monotonic()
    done = threading.Event()
    result: list = []
    threading.Thread(
        target=lambda: (result.append(ex.run_calls(program, ["1"] * 3)), done.set()), daemon=True
    ).start()
    assert done.wait(15), "a job that writes rows never ends"
    assert time.monotonic() - t0 < 3 * CFG.timeout_s + 1.5
    assert len(result[0]) == 3


def test_row_flood_does_not_kill_the_worker(ex: Executor, fresh: list[tuple]) -> None:
    flood = f"import os\ndef f(a):\n    chunk = {ROW} * 50000\n    while True:\n        os.write(3, chunk)"
    pids = ex.worker_pids
    assert_no_effect(ex, flood, fresh)
    assert ex.worker_pids == pids, "the worker died"


def test_own_rows_cannot_pass_the_output_cap(ex: Executor) -> None:
    big = "b'ok 0 90000 -1 0 90000\\n' + b'9' * 90000"
    rows = ex.run_jobs(
        [
            {
                "code": f"import os\ndef f(a):\n    os.write(3, {big})\n    os._exit(0)",
                "calls": ["1"],
                "entry": "f",
            }
        ]
    )
    assert not rows[0][0].ok and len(rows[0][0].value or "") <= CFG.max_output_chars


def test_a_bad_row_fails_only_its_own_job(ex: Executor, fresh: list[tuple]) -> None:
    assert_no_effect(
        ex, "import os\ndef f(a):\n    os.write(3, b'timeout 0 0 -1 0 0\\n')\n    return 1", fresh
    )


# 4. State that would survive from one job to the next.

PLANT = r"""
import ctypes, os, time
def f(a):
    libc = ctypes.CDLL(None, use_errno=True)
    planted = []
    for d in ("/tmp", "/dev", "/dev/shm", "/var/tmp", ".", "/", "/run/lock"):
        p = os.path.join(d, "azr-planted")
        try:
            before = os.stat(d).st_mtime_ns
            with open(p, "w") as fh:
                fh.write("x")
            os.chmod(p, 0o666)
            os.utime(d, ns=(before, before))  # the old sweep skipped directories whose mtime had not changed
            planted.append(p)
        except OSError:
            pass
    planted.append(libc.msgget(0x7A7A01, 0o1666) >= 0)  # IPC_CREAT | 0666
    planted.append(libc.shmget(0x7A7A02, 4096, 0o1666) >= 0)
    planted.append(libc.mq_open(b"/azr-planted", os.O_CREAT | os.O_RDWR, 0o666, None) >= 0)
    return planted
"""


def test_nothing_survives_from_one_job_to_the_next(ex: Executor, fresh: list[tuple]) -> None:
    rows = assert_no_effect(ex, PLANT, fresh)
    assert rows[0].ok


# 5. A child holds only its own job, and validation calls f as every later use does.

SECRET = "def f(a):\n    return 'azr-secret-' + 'value-' + str(a)  # azr-secret-code-marker"
SPY = r"""
import gc, sys
# Markers are searched as a prefix followed by a reversed suffix, so this job never holds a whole marker itself.
NEEDLES = {"code": ("azr-secret-", "rekram-edoc"), "value": ("azr-secret-", "4-eulav")}
def f(a):
    found = set()
    for obj in gc.get_objects():
        for text in _texts(obj):
            found |= _find(text)
    frame = sys._getframe()
    while frame is not None:
        for v in frame.f_locals.values():
            for text in _texts(v):
                found |= _find(text)
        frame = frame.f_back
    return sorted(found | _memory())
def _find(text):
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    out = set()
    for name, (prefix, rsuffix) in NEEDLES.items():
        p = prefix.encode()
        i = data.find(p)
        while i >= 0:
            if data[i + len(p) : i + len(p) + len(rsuffix)][::-1] == rsuffix.encode():
                out.add(name)
            i = data.find(p, i + 1)
    return out
def _texts(obj):
    if isinstance(obj, (str, bytes)):
        return [obj]
    if isinstance(obj, (list, tuple, dict)):
        items = obj.values() if isinstance(obj, dict) else obj
        return [x for x in items if isinstance(x, (str, bytes))]
    return []
def _memory():
    import ctypes
    try:
        maps = open("/proc/self/maps").read().splitlines()
    except OSError:
        return set()
    found = set()
    for line in maps:
        addr, perms = line.split()[:2]
        if not perms.startswith("r") or "[v" in line:
            continue
        lo, hi = (int(x, 16) for x in addr.split("-"))
        if hi - lo <= 256 << 20:
            found |= _find(ctypes.string_at(lo, hi - lo))
    return found
"""


def test_a_child_holds_no_other_job(ex: Executor) -> None:
    rows = ex.run_jobs(_jobs([(SECRET, "4"), (SPY, "0"), (SECRET, "4"), (SPY, "0")]))
    assert rows[0][0].value == "'azr-secret-value-4'"
    later = ex.run_jobs(_jobs([(SPY, "0")]))  # the results of an earlier request are gone too
    assert [rows[1][0].value, rows[3][0].value, later[0][0].value] == ["[]"] * 3


# 7. The fallback tiers: the parent-death signal survives the uid change.


def test_jobs_die_with_their_worker(tier: str, ex: Executor) -> None:
    if tier == "bwrap":
        check = "import ctypes\ndef f(a):\n    return 'ok'"
    else:
        check = (
            "import ctypes\ndef f(a):\n    libc = ctypes.CDLL(None)\n    sig = ctypes.c_int(-1)\n"
            "    libc.prctl(2, ctypes.byref(sig), 0, 0, 0)\n    return sig.value"
        )
        assert ex.run(check, "0").value == str(int(signal.SIGKILL))  # PR_GET_PDEATHSIG
    sleeper = "import time\ndef f(a):\n    time.sleep(30)"
    slow = Executor(ExecutorConfig(timeout_s=60.0, memory_mb=256, workers=1, determinism_runs=1), tier=tier)
    try:
        threading.Thread(target=_quietly, args=(slow.run, sleeper, "0"), daemon=True).start()
        deadline = time.monotonic() + 10
        jobs: set[int] = set()
        while not jobs and time.monotonic() < deadline:
            time.sleep(0.2)
            jobs = descendants(slow.worker_pids[0]) - _at_depth(
                slow.worker_pids[0], 2 if tier == "bwrap" else 1
            )
        assert jobs, "the sleeping job never started"
        os.kill(slow.worker_pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in jobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in jobs), "a job outlived its worker"
    finally:
        slow.close()


def _quietly(fn: object, *args: object) -> None:
    try:
        fn(*args)  # type: ignore[operator]
    except Exception:  # the worker is killed under it, and the pool closed
        pass


def _at_depth(pid: int, depth: int) -> set[int]:
    """The worker's own processes: bwrap's outer process, the worker and its zygote (not the jobs)."""
    tree, level = children(), {pid}
    out: set[int] = set()
    for _ in range(depth):
        level = {c for p in level for c in tree.get(p, [])}
        out |= level
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# 8. Host resources: no second process or thread, no writable file system.


def test_no_processes_threads_or_files(tier: str, ex: Executor) -> None:
    program = r"""
import _thread, os
def f(a):
    made = []
    try:
        _thread.start_new_thread(lambda: None, ())
        made.append("thread")
    except RuntimeError:
        pass
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        made.append("fork")
    except OSError:
        pass
    for d in ("/dev", "/dev/shm", "/tmp", "."):
        try:
            os.mkdir(os.path.join(d, "azr-planted-dir"))
            made.append(d)
        except OSError:
            pass
    return made
"""
    made = ex.run(program, "0").value or ""
    assert "'thread'" not in made and "'fork'" not in made, made
    if tier != "rlimits":  # without the seccomp filter a job may create files where its uid may write
        assert made == "[]", made


def test_selfcheck_probes_report_what_the_tier_stops(tier: str) -> None:
    from azr.executor import check_protections

    held = {name: ok for name, ok, _ in check_protections(tier)}
    always = ["no new process", "no new thread", "no signal to the worker", "worker's limits out of reach"]
    assert all(held[name] for name in [*always, "worker's memory out of reach"]), held
    if tier != "rlimits":
        assert held["no network"] and held["no file created"], held
    assert held["no other process visible"] == (tier == "bwrap")


# The whole suite again as an unprivileged user (bwrap through user namespaces, seccomp with the user's own uid).


def _others_may_enter(path: Path) -> bool:
    """Whether a user other than the owner can read ``path`` and reach it (os.access says yes to root)."""
    return path.stat().st_mode & 0o005 == 0o005 and all(p.stat().st_mode & 0o001 for p in path.parents)


def test_the_suite_holds_for_an_unprivileged_user() -> None:
    import shutil
    import subprocess
    import sys
    import tempfile

    if os.geteuid() != 0 or os.environ.get("AZR_UNPRIVILEGED_RUN"):
        pytest.skip("needs root, to drop to an unprivileged user")
    # an interpreter outside root-only directories, of this version (the test imports pytest from this venv)
    python = shutil.which(
        f"python{sys.version_info[0]}.{sys.version_info[1]}", path="/usr/bin:/usr/local/bin"
    )
    if python is None or shutil.which("setpriv") is None:
        pytest.skip("no system Python of this version, or no setpriv, to run the suite as nobody")
    src = Path(__file__).resolve().parents[1] / "src"
    site = Path(pytest.__file__).resolve().parents[1]
    if not all(_others_may_enter(p) for p in (src, site)):
        pytest.skip("the checkout or its packages are not readable by other users")
    with tempfile.TemporaryDirectory(prefix="azr-unprivileged-") as home:  # pytest's tmp_path is root-only
        os.chmod(home, 0o777)
        env = {
            "HOME": home,
            "PATH": "/usr/bin:/bin",
            "AZR_UNPRIVILEGED_RUN": "1",
            "PYTHONPATH": f"{src}:{site}",
        }
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-m", "pytest", "-q"]
        cmd += ["-p", "no:cacheprovider", "--rootdir", home, __file__]
        r = subprocess.run(cmd, cwd=home, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
