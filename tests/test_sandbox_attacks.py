"""Adversarial suite, one test per sandbox property. The programs bypass the static check (``Executor.run`` does
not apply it) so that the sandbox boundary itself is tested. After every attack the pool must still answer
correctly and no process may be left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from azr.config import ExecutorConfig
from azr.executor import TIERS, Executor, Status, available_tiers
from proc_helpers import descendants

SECRET = "azr-test-secret-4b1d"


@pytest.fixture(scope="module", params=[t for t in ("bwrap", "seccomp", "rlimits") if t in available_tiers()])
def ex(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """The same attacks in every sandboxed tier this machine has, each forced (``need`` skips what a tier does
    not promise)."""
    os.environ["AZR_SECRET_TOKEN"] = SECRET
    # as root outside bwrap a job cannot import from a root-only stdlib: preload what the attacks use
    os.environ["AZR_SANDBOX_PRELOAD"] = "socket subprocess threading ctypes signal time"
    try:
        cfg = ExecutorConfig(timeout_s=1.0, memory_mb=256, max_output_chars=2000)
        with Executor(cfg, tier=request.param) as executor:
            yield executor
    finally:
        del os.environ["AZR_SECRET_TOKEN"], os.environ["AZR_SANDBOX_PRELOAD"]


@pytest.fixture
def attack(ex: Executor) -> Iterator[Executor]:
    """Yields the executor; afterwards checks the pool serves correct results and nothing was leaked."""
    idle = {pid: len(descendants(pid)) for pid in ex.worker_pids}
    yield ex
    rs = ex.run_many([("def f(a):\n    return sorted(a)", "[3, 1, 2]")] * 6)
    assert [r.value for r in rs] == ["[1, 2, 3]"] * 6
    for pid in ex.worker_pids:  # a restarted worker has a new pid and the same shape
        expected = idle.get(pid, max(idle.values()))
        assert len(descendants(pid)) == expected, "a process was left behind"


def need(ex: Executor, tier: str) -> None:
    if TIERS.index(ex.tier) < TIERS.index(tier):
        pytest.skip(f"needs the {tier} tier (running {ex.tier})")


def test_fork_bomb(attack: Executor) -> None:
    need(attack, "seccomp")
    r = attack.run("import os\ndef f(a):\n    while True:\n        os.fork()", "1")
    assert r.status is Status.ERROR and r.error_type == "PermissionError"


def test_memory_bomb(attack: Executor) -> None:
    need(attack, "rlimits")
    r = attack.run("def f(a):\n    x = []\n    while True:\n        x.append(bytearray(5 * 10**7))", "1")
    assert r.status is Status.MEMORY


def test_infinite_loop(attack: Executor) -> None:
    assert attack.run("def f(a):\n    while True:\n        pass", "1").status is Status.TIMEOUT


def test_deep_recursion(attack: Executor) -> None:
    program = "import sys\nsys.setrecursionlimit(10**8)\ndef f(a):\n    return f(a + 1) + 1"
    r = attack.run(program, "0")
    assert r.status in (Status.ERROR, Status.MEMORY, Status.TIMEOUT)


def test_huge_printed_output(attack: Executor) -> None:
    r = attack.run("def f(a):\n    while True:\n        print('x' * 1000)", "1")
    assert r.status is Status.OUTPUT_TOO_LARGE and len(r.stdout) <= 2000


def test_huge_result(attack: Executor) -> None:
    assert attack.run("def f(a):\n    return list(range(a))", "10**5").status is Status.OUTPUT_TOO_LARGE


def test_write_and_delete_files_outside_workdir(attack: Executor, tmp_path: Path) -> None:
    need(attack, "bwrap")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    program = (
        "import os\ndef f(paths):\n    done = []\n    for p in paths:\n"
        "        for act in (lambda: open(p, 'w').write('pwned'), lambda: os.remove(p)):\n"
        "            try:\n                act(); done.append(p)\n            except OSError:\n                pass\n"
        "    return done"
    )
    targets = [
        str(victim),
        "/usr/azr_pwned",
        "/etc/azr_pwned",
        str(Path.home() / "azr_pwned"),
        "/work/azr_pwned",
    ]
    r = attack.run(program, repr(targets))
    assert r.ok
    assert victim.read_text() == "keep me"
    assert not any(Path(t).exists() for t in targets[1:])


def test_no_file_can_be_created_or_changed(attack: Executor) -> None:
    need(attack, "seccomp")
    program = (
        "import os\ndef f(a):\n    done = []\n    for d in ('.', '/tmp', '/dev', '/dev/shm', '/var/tmp'):\n"
        "        p = os.path.join(d, 'azr-x')\n"
        "        for act in (lambda: open(p, 'w'), lambda: os.mkdir(p), lambda: os.mkfifo(p),\n"
        "                    lambda: os.symlink('/etc', p), lambda: open('/dev/null', 'a')):\n"
        "            try:\n                act(); done.append(p)\n            except OSError:\n                pass\n"
        "    return done"
    )
    assert attack.run(program, "1").value == "[]"


def test_environment_is_empty(attack: Executor) -> None:
    r = attack.run("import os\ndef f(a):\n    return dict(os.environ)", "1")
    assert r.ok and r.value == "{}"


def test_cannot_read_user_files(attack: Executor) -> None:
    need(attack, "bwrap")
    secret_file = Path.home() / ".azr_test_secret"
    secret_file.write_text(SECRET)
    try:
        program = "def f(p):\n    try:\n        return open(p).read()\n    except OSError as e:\n        return type(e).__name__"
        results = attack.run_many([(program, repr(str(secret_file))), (program, "'/proc/1/environ'")])
        assert all(r.ok and SECRET not in (r.value or "") for r in results)
        assert attack.run(program, repr(str(Path.cwd() / "pyproject.toml"))).value == "'FileNotFoundError'"
    finally:
        secret_file.unlink()


def test_no_network(attack: Executor) -> None:
    need(attack, "seccomp")
    program = (
        "import socket\ndef f(a):\n    out = []\n    for fam in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):\n"
        "        try:\n            socket.socket(fam); out.append('open')\n"
        "        except OSError as e:\n            out.append(type(e).__name__)\n    return out"
    )
    assert attack.run(program, "1").value == "['PermissionError', 'PermissionError', 'PermissionError']"


def test_no_subprocess(attack: Executor) -> None:
    need(attack, "seccomp")
    r = attack.run("import subprocess\ndef f(a):\n    return subprocess.run(['true']).returncode", "1")
    assert r.status is Status.ERROR and r.error_type == "PermissionError"


def test_cannot_kill_parent_or_siblings(attack: Executor) -> None:
    need(attack, "seccomp")
    program = (
        "import os, signal\ndef f(targets):\n    out = []\n    for pid in targets + [os.getppid(), -1]:\n"
        "        try:\n            os.kill(pid, signal.SIGKILL); out.append('killed')\n"
        "        except OSError as e:\n            out.append(type(e).__name__)\n    return out"
    )
    r = attack.run(program, repr([*attack.worker_pids, os.getpid()]))
    assert r.ok and "killed" not in (r.value or "")


def test_signals_cannot_outlive_the_deadline(attack: Executor) -> None:
    program = "import signal, time\ndef f(a):\n    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n        signal.signal(s, signal.SIG_IGN)\n    time.sleep(30)"
    assert attack.run(program, "1").status is Status.TIMEOUT


def test_os_exit(attack: Executor) -> None:
    r = attack.run("import os\ndef f(a):\n    os._exit(0)", "1")
    assert r.status is Status.ERROR and "without a result" in r.message


def test_ctypes_raw_syscalls(attack: Executor) -> None:
    need(attack, "bwrap")
    program = "import ctypes\ndef f(a):\n    libc = ctypes.CDLL(None)\n    return [libc.syscall(n) for n in (57, 58, 41)]"
    r = attack.run(program, "1")  # fork, vfork, socket through raw syscalls
    assert r.ok and r.value == "[-1, -1, -1]"


def test_ctypes_segfault(attack: Executor) -> None:
    need(attack, "bwrap")
    r = attack.run("import ctypes\ndef f(a):\n    return ctypes.string_at(0)", "1")
    assert r.status is Status.ERROR and "SIGSEGV" in r.message


def test_no_threads(attack: Executor) -> None:
    need(attack, "seccomp")
    program = (
        "import threading, time\ndef spin():\n    while True:\n        time.sleep(0.01)\n"
        "def f(a):\n    for _ in range(4):\n        threading.Thread(target=spin, daemon=False).start()\n    return a"
    )
    r = attack.run(program, "7")
    assert r.status is Status.ERROR and "can't start new thread" in r.message


def test_monkey_patched_builtins_do_not_poison_next_job(attack: Executor) -> None:
    poison = "import builtins\nbuiltins.len = lambda x: 42\nbuiltins.sorted = lambda x: 'poisoned'\ndef f(a):\n    return len(a)"
    assert all(r.value == "42" for r in attack.run_many([(poison, "[1]")] * 6))
    assert [r.value for r in attack.run_many([("def f(a):\n    return len(a)", "[1, 2]")] * 6)] == ["2"] * 6


def test_subclasses_escape(attack: Executor) -> None:
    need(attack, "seccomp")
    program = (
        "def f(cmd):\n    for c in ().__class__.__bases__[0].__subclasses__():\n"
        "        if c.__name__ == '_wrap_close':\n            return c.__init__.__globals__['system'](cmd)\n"
        "    return 'not found'"
    )
    marker = Path("/tmp/azr_subclasses_pwned")
    r = attack.run(program, repr(f"touch {marker}"))
    assert r.ok and r.value != "0" and not marker.exists()


def test_timeout_inside_a_c_call(attack: Executor) -> None:
    program = "import re\ndef f(n):\n    return re.match(r'(a+)+b', 'a' * n)"
    assert attack.run(program, "64").status is Status.TIMEOUT


def test_no_files_left_for_the_next_job(attack: Executor) -> None:
    need(attack, "bwrap")
    plant = (
        "import os\ndef f(a):\n    planted = []\n    for d in ('/tmp', '/dev/shm', '/root', '/var/tmp', '..', '/tmp/..'):\n"
        "        try:\n            open(os.path.join(d, 'planted'), 'w').write('x'); planted.append(d)\n"
        "        except OSError:\n            pass\n"
        "    for n in range(1, 200):\n        try:\n            os.mkdir(os.path.join('..', str(int(os.path.basename(os.getcwd())) + n)))\n"
        "        except (OSError, ValueError):\n            pass\n    return planted"
    )
    look = (
        "import os\ndef f(a):\n    found = []\n    for d in ('/tmp', '/dev/shm', '/root', '/var/tmp', '..'):\n"
        "        found += [os.path.join(d, n) for n in os.listdir(d) if n == 'planted']\n"
        "    return found"
    )
    assert attack.run_many([(plant, "1")] * 4)[0].ok
    assert [r.value for r in attack.run_many([(look, "1")] * 6)] == ["[]"] * 6
