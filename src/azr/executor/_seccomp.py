"""A seccomp-BPF filter built by hand (no libseccomp), installed with prctl through ctypes.

Standard library only: the sandbox worker imports this module. x86-64 only; elsewhere :func:`supported` is False
and the seccomp tier is unavailable.

The filter is a deny-list: the syscalls below fail with EPERM (clone3 with ENOSYS, so that glibc falls back to
clone for threads); everything else is allowed. Denied:

- network: ``socket``, ``socketpair`` (no socket of any family can be created);
- process creation and program execution: ``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD`` (threads stay
  possible), ``execve``, ``execveat``;
- signals to other processes: ``kill`` unless the target is the caller itself or its own group (pid 0),
  ``tgkill``/``rt_sigqueueinfo``/``rt_tgsigqueueinfo`` unless the target is the caller, ``tkill``,
  ``pidfd_open``/``pidfd_send_signal``/``pidfd_getfd``;
- leaving the process group or session: ``setpgid``, ``setsid`` (the wall-clock kill is by process group);
- debugging and other processes' memory: ``ptrace``, ``process_vm_readv``/``writev``;
- mounts and namespaces: ``mount``, ``umount2``, ``pivot_root``, ``chroot``, ``unshare``, ``setns`` and the new
  mount API; identity changes (``setuid`` and friends, ``capset``);
- kernel attack surface rarely needed by Python: ``bpf``, ``perf_event_open``, ``keyctl``, ``add_key``,
  ``request_key``, ``userfaultfd``, ``io_uring_*``, modules, kexec, reboot, swap, clock setting, ``iopl``/``ioperm``,
  handle-based open, ``fanotify_init``, ``acct``;
- any x32-ABI syscall, and any syscall from a non-x86-64 architecture (the process is killed).

In the sandbox the policy is installed as two stacked filters (the kernel applies every filter of a process and
the strictest answer wins, so a child is held to exactly the list above): the *worker filter*, installed once in
the fork-server worker and inherited by every child, denies everything the worker itself never needs (sockets,
exec, ptrace, mounts and namespaces, pidfds, ``tkill``, the kernel attack surface, foreign architectures); the
*child filter*, installed by each child before it runs the program, adds the rest (process creation, signals to
other processes, ``setpgid``/``setsid``, identity changes). Installing a filter costs the kernel a run of the filter
for every syscall number (its action cache) with interrupts off, so the per-child filter is kept short.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
_LD_ABS_W = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_CLONE_THREAD = 0x00010000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2

_NR = {
    "clone": 56,
    "clone3": 435,
    "kill": 62,
    "tgkill": 234,
    "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297,
}
_DENIED = (
    41, 53,  # socket, socketpair
    57, 58, 59, 322,  # fork, vfork, execve, execveat
    200, 424, 434, 438,  # tkill, pidfd_send_signal, pidfd_open, pidfd_getfd
    109, 112,  # setpgid, setsid
    101, 310, 311,  # ptrace, process_vm_readv, process_vm_writev
    165, 166, 155, 161, 272, 308, 428, 429, 430, 431, 432, 433, 442,  # mounts, namespaces
    105, 106, 113, 114, 116, 117, 119, 122, 123, 126,  # set*id, setgroups, setfs*id, capset
    321, 298, 250, 248, 249, 323, 425, 426, 427,  # bpf, perf, keys, userfaultfd, io_uring
    175, 176, 313, 246, 320, 169, 167, 168,  # modules, kexec, reboot, swap
    159, 164, 227, 170, 171, 172, 173, 303, 304, 300, 163,  # clocks, hostname, io ports, handles, acct
)  # fmt: skip
# Denied by the child filter only: the worker forks, signals its children and (as root outside bwrap) lets a child
# drop to nobody before that child installs its filter.
_CHILD_ONLY = (57, 58, 109, 112, 105, 106, 113, 114, 116, 117, 119, 122, 123, 126)


_LIBC: ctypes.CDLL | None = None


class _Sockfprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    """Whether this machine's architecture is one the filter is written for."""
    return os.uname().machine in ("x86_64", "AMD64")


def build_filter(own_pid: int, part: str = "all") -> bytes:
    """Assemble the BPF program for a process whose pid is ``own_pid`` (signals only to itself). ``part`` is
    ``"all"`` (the whole policy in one filter), ``"worker"`` or ``"child"`` (the two stacked halves)."""
    if part not in ("all", "worker", "child"):
        raise ValueError(f"unknown filter part {part!r}")
    denied = {
        "all": _DENIED,
        "worker": [nr for nr in _DENIED if nr not in _CHILD_ONLY],
        "child": _CHILD_ONLY,
    }[part]
    prog: list[tuple[int, str | None, str | None, int]] = [
        (_LD_ABS_W, None, None, 4),  # seccomp_data.arch
        (_JEQ, None, "killproc", _AUDIT_ARCH_X86_64),
        (_LD_ABS_W, None, None, 0),  # seccomp_data.nr
        (_JGE, "deny", None, 0x40000000),  # x32 ABI
    ]
    if part != "worker":
        prog += [
            (_JEQ, "clone", None, _NR["clone"]),
            (_JEQ, "nosys", None, _NR["clone3"]),
            (_JEQ, "kill", None, _NR["kill"]),
            (_JEQ, "self", None, _NR["tgkill"]),
            (_JEQ, "self", None, _NR["rt_sigqueueinfo"]),
            (_JEQ, "self", None, _NR["rt_tgsigqueueinfo"]),
        ]
    prog += [(_JEQ, "deny", None, nr) for nr in denied]
    prog += [(_RET, None, None, _RET_ALLOW)]
    labels = {
        "clone": [(_LD_ABS_W, None, None, 16), (_JSET, "allow", "deny", _CLONE_THREAD)],
        "kill": [(_LD_ABS_W, None, None, 16), (_JEQ, "allow", None, 0)],  # falls through to "self"
        "self": [(_LD_ABS_W, None, None, 16), (_JEQ, "allow", "deny", own_pid & 0xFFFFFFFF)],
        "allow": [(_RET, None, None, _RET_ALLOW)],
        "deny": [(_RET, None, None, _RET_ERRNO | errno.EPERM)],
        "nosys": [(_RET, None, None, _RET_ERRNO | errno.ENOSYS)],
        "killproc": [(_RET, None, None, _RET_KILL_PROCESS)],
    }
    where: dict[str, int] = {}
    for name, block in labels.items():
        where[name] = len(prog)
        prog += block
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(prog):
        t = where[jt] - i - 1 if jt else 0
        f = where[jf] - i - 1 if jf else 0
        if not (0 <= t < 256 and 0 <= f < 256):
            raise ValueError("seccomp filter jump out of range")
        out += struct.pack("=HBBI", code, t, f, k)
    return bytes(out)


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_FAST: ctypes.CDLL | None = None


def libc_prctl():  # type: ignore[no-untyped-def]
    """libc's prctl as a ctypes function ``f(option, arg2, arg3, arg4, arg5)`` that does not save errno (cheaper
    per call: a forked child then writes to fewer pages); on failure, call :func:`prctl_errno` for the errno."""
    global _FAST
    if _FAST is None:
        _FAST = ctypes.CDLL(None)
    return _FAST.prctl


def prctl_errno(*args: object) -> int:
    """Repeat a failed prctl (same five arguments) through the errno-saving function; returns its errno."""
    _libc().prctl(*args)
    return ctypes.get_errno()


def prctl(option: int, arg: int) -> int:
    """Call prctl(option, arg, 0, 0, 0) through libc; returns its result."""
    return int(_libc().prctl(option, arg, 0, 0, 0))


_PID_MARK = 0x7EADBEEF


class Prepared:
    """A filter assembled once in the worker; :meth:`install` in each child only patches its pid in and calls
    prctl once (no_new_privs is set here and inherited). ``part`` as in :func:`build_filter`: the worker installs
    the ``"worker"`` part on itself (:func:`install_worker`) and prepares the short ``"child"`` part."""

    def __init__(self, part: str = "all") -> None:
        code = build_filter(_PID_MARK, part)
        self._offset = code.find(struct.pack("=I", _PID_MARK))
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = _Sockfprog(len(code) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self._ref = ctypes.byref(self._prog)
        self._prctl = libc_prctl()
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(prctl_errno(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS) failed")

    def install(self, own_pid: int) -> None:
        if self._offset >= 0:
            struct.pack_into("=I", self._buf, self._offset, own_pid)
        if self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._ref, 0, 0) != 0:
            errno_ = prctl_errno(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._ref, 0, 0)
            raise OSError(errno_, "prctl(PR_SET_SECCOMP) failed")


def install(own_pid: int) -> None:
    """Set no_new_privs and install the whole policy on the calling process; raises OSError on failure."""
    Prepared().install(own_pid)


def install_worker() -> None:
    """Install the worker half of the policy on the calling process (the fork-server worker)."""
    Prepared("worker").install(0)
