"""A seccomp-BPF filter built by hand (no libseccomp), installed with prctl through ctypes.

Standard library only: the sandbox worker imports this module. x86-64 only; elsewhere :func:`supported` is False
and the seccomp tier is unavailable.

The filter is a deny-list with argument checks: the syscalls below fail with EPERM; everything else is allowed.

- network: ``socket``, ``socketpair`` (no socket of any family can be created);
- process and thread creation, program execution: ``fork``, ``vfork``, ``clone``, ``clone3``, ``execve``,
  ``execveat`` (a job is one single-threaded process: nothing can outlive the group kill or count against the
  host's process table);
- signals to other processes: ``kill`` unless the target is the caller or its own group (pid 0),
  ``tgkill``/``rt_sigqueueinfo``/``rt_tgsigqueueinfo`` unless the target is the caller, ``tkill``, pidfds; and the
  kernel's own signal routes: ``fcntl`` ``F_SETOWN``/``F_SETOWN_EX``/``F_SETSIG``/``F_SETLEASE``/``F_NOTIFY`` and
  every ``ioctl`` but a few read-only terminal and descriptor requests (``FIOSETOWN``, ``FIOASYNC``, ...);
- other processes' limits and scheduling: ``prlimit64`` on any pid but 0 (itself), ``setpriority``,
  ``sched_setscheduler``/``setparam``/``setaffinity``/``setattr``, ``ioprio_set``, ``migrate_pages``,
  ``move_pages``, ``kcmp``, ``process_madvise``/``process_mrelease``;
- leaving the process group or session: ``setpgid``, ``setsid`` (the wall-clock kill is by process group);
- debugging and other processes' memory: ``ptrace``, ``process_vm_readv``/``writev``;
- any change to the file system: ``open``/``openat`` for writing, appending, creating or truncating (``openat2``
  entirely), and every call that creates, renames, links, removes, truncates or changes the mode, owner, times
  or extended attributes of a file; ``memfd_create`` and ``fallocate``. A job can read what its uid may read and
  write only to the descriptors it was given (its output pipes);
- state that would outlive the job: System V message queues, semaphores and shared memory, POSIX message queues;
- mounts and namespaces: ``mount``, ``umount2``, ``pivot_root``, ``chroot``, ``unshare``, ``setns`` and the new
  mount API; identity changes (``setuid`` and friends, ``capset``);
- kernel attack surface rarely needed by Python: ``bpf``, ``perf_event_open``, ``keyctl``, ``add_key``,
  ``request_key``, ``userfaultfd``, ``io_uring_*``, ``modify_ldt``, ``personality``, modules, kexec, reboot, swap,
  clock setting, ``iopl``/``ioperm``, handle-based open, ``fanotify``, ``acct``, quotas, ``vhangup``;
- any x32-ABI syscall (EPERM), and any syscall from a non-x86-64 architecture (the process is killed).

In the sandbox the policy is installed as two stacked filters (the kernel applies every filter of a process and
the strictest answer wins, so a child is held to exactly the list above): the *worker filter*, installed once in
the fork-server worker and inherited by its zygote and every child, denies everything the worker itself never
needs; the *child filter*, installed by each child before it runs the program, adds the rest (process and thread
creation, signals to other processes, ``setpgid``/``setsid``, identity changes). Installing a filter costs the
kernel a run of the filter for every syscall number (its action cache) with interrupts off, so the per-child
filter is kept short.
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
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
ALLOW, DENY = _RET_ALLOW, _RET_ERRNO | errno.EPERM

_WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY, O_RDWR, O_CREAT, O_TRUNC, O_APPEND
_FCNTL_DENIED = (8, 10, 15, 1024, 1026)  # F_SETOWN, F_SETSIG, F_SETOWN_EX, F_SETLEASE, F_NOTIFY
# ioctl requests a job may make: TCGETS (isatty), TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX
_IOCTL_ALLOWED = (0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451)

_DENIED = (
    41, 53,  # socket, socketpair
    57, 58, 59, 322,  # fork, vfork (glibc's fork is clone), execve, execveat
    200, 424, 434, 438,  # tkill, pidfd_send_signal, pidfd_open, pidfd_getfd
    101, 310, 311,  # ptrace, process_vm_readv, process_vm_writev
    165, 166, 155, 161, 272, 308, 428, 429, 430, 431, 432, 433, 442,  # mounts, namespaces
    321, 298, 250, 248, 249, 323, 425, 426, 427,  # bpf, perf, keys, userfaultfd, io_uring
    175, 176, 313, 246, 320, 169, 167, 168,  # modules, kexec, reboot, swap
    159, 164, 227, 170, 171, 172, 173, 303, 304, 300, 301, 163,  # clocks, hostname, io ports, handles, fanotify, acct
    141, 142, 144, 203, 314, 251,  # setpriority, sched_set{param,scheduler,affinity,attr}, ioprio_set
    256, 279, 312, 440, 448,  # migrate_pages, move_pages, kcmp, process_madvise, process_mrelease
    85, 76, 77, 83, 258, 133, 259, 86, 265, 88, 266, 82, 264, 316, 87, 263, 84,  # create/rename/link/remove
    90, 91, 268, 452, 92, 93, 94, 260, 132, 235, 261, 280,  # modes, owners, times
    188, 189, 190, 197, 198, 199, 319, 447, 285,  # xattrs, memfd_create, memfd_secret, fallocate
    68, 69, 70, 71, 64, 65, 66, 220, 29, 30, 31, 67,  # System V IPC
    240, 241, 242, 243, 244, 245,  # POSIX message queues
    154, 135, 153, 179, 443, 134, 139, 136, 212, 180,  # modify_ldt, personality, vhangup, quotas, legacy
)  # fmt: skip
_CHILD_DENIED = (56, 435, 109, 112)  # clone, clone3 (no new process or thread), setpgid, setsid
"""Denied by the child filter only: the worker and its zygote fork (glibc's fork is ``clone``) and the zygote sets
its children's process groups. The child filter is kept this short because every child installs it."""
_ID_CHANGES = (105, 106, 113, 114, 116, 117, 119, 122, 123, 126)  # set*id, setgroups, setfs*id, capset
"""Denied by the worker filter, unless a child must change its uid before it installs its own filter (as root
outside bwrap): then by the child filter."""

_NR_OPEN, _NR_OPENAT, _NR_OPENAT2, _NR_FCNTL, _NR_IOCTL, _NR_PRLIMIT = 2, 257, 437, 72, 16, 302
_NR_KILL, _NR_TGKILL, _NR_SIGQUEUE, _NR_TGSIGQUEUE = 62, 234, 129, 297

_Insn = tuple[int, int, int, int]  # code, jump-if-true, jump-if-false, k


def _arg(i: int) -> _Insn:
    """Load the low 32 bits of syscall argument ``i`` (the kernel reads int and unsigned int arguments so)."""
    return (_LD_ABS_W, 0, 0, 16 + 8 * i)


def _rule(nr: int, block: list[_Insn]) -> list[_Insn]:
    """``if nr == <nr>: <block>`` (the block ends in returns; otherwise go on with the next rule)."""
    return [(_JEQ, 0, len(block), nr), *block]


def _deny_unless_equal(arg: int, allowed: tuple[int, ...]) -> list[_Insn]:
    """Allow when argument ``arg`` equals one of ``allowed``, else deny."""
    n = len(allowed)
    block = [_arg(arg)]
    block += [(_JEQ, n - i, 0, v) for i, v in enumerate(allowed)]  # jump to the ALLOW after the DENY
    return [*block, (_RET, 0, 0, DENY), (_RET, 0, 0, ALLOW)]


def _deny_if_equal(arg: int, denied: tuple[int, ...]) -> list[_Insn]:
    """Deny when argument ``arg`` equals one of ``denied``, else allow."""
    n = len(denied)
    block = [_arg(arg)]
    block += [(_JEQ, n - i, 0, v) for i, v in enumerate(denied)]
    return [*block, (_RET, 0, 0, ALLOW), (_RET, 0, 0, DENY)]


def _deny_if_any_bit(arg: int, mask: int) -> list[_Insn]:
    return [_arg(arg), (_JSET, 1, 0, mask), (_RET, 0, 0, ALLOW), (_RET, 0, 0, DENY)]


def build_filter(own_pid: int, part: str = "all", child_changes_uid: bool = False) -> bytes:
    """Assemble the BPF program for a process whose pid is ``own_pid`` (signals only to itself). ``part`` is
    ``"all"`` (the whole policy in one filter), ``"worker"`` or ``"child"`` (the two stacked halves);
    ``child_changes_uid`` moves the identity changes from the worker half to the child half."""
    if part not in ("all", "worker", "child"):
        raise ValueError(f"unknown filter part {part!r}")
    ids_in_child = part == "all" or child_changes_uid
    prog: list[_Insn] = [
        (_LD_ABS_W, 0, 0, 4),  # seccomp_data.arch
        (_JEQ, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET, 0, 0, _RET_KILL_PROCESS),
        (_LD_ABS_W, 0, 0, 0),  # seccomp_data.nr
        (_JGE, 0, 1, 0x40000000),  # x32 ABI
        (_RET, 0, 0, DENY),
    ]
    if part != "worker":
        own = own_pid & 0xFFFFFFFF
        prog += _rule(_NR_KILL, _deny_unless_equal(0, (0, own)))
        for nr in (_NR_TGKILL, _NR_SIGQUEUE, _NR_TGSIGQUEUE):
            prog += _rule(nr, _deny_unless_equal(0, (own,)))
        for nr in (*_CHILD_DENIED, *(_ID_CHANGES if ids_in_child else ())):
            prog += _rule(nr, [(_RET, 0, 0, DENY)])
    if part != "child":
        prog += _rule(_NR_OPEN, _deny_if_any_bit(1, _WRITE_FLAGS))
        prog += _rule(_NR_OPENAT, _deny_if_any_bit(2, _WRITE_FLAGS))
        prog += _rule(_NR_OPENAT2, [(_RET, 0, 0, DENY)])
        prog += _rule(_NR_FCNTL, _deny_if_equal(1, _FCNTL_DENIED))
        prog += _rule(_NR_IOCTL, _deny_unless_equal(1, _IOCTL_ALLOWED))
        prog += _rule(_NR_PRLIMIT, _deny_unless_equal(0, (0,)))
        for nr in (*_DENIED, *(() if ids_in_child else _ID_CHANGES)):
            prog += _rule(nr, [(_RET, 0, 0, DENY)])
    prog.append((_RET, 0, 0, ALLOW))
    if len(prog) > 4096:
        raise ValueError("seccomp filter too long")
    return b"".join(struct.pack("=HBBI", *insn) for insn in prog)


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


_LIBC: ctypes.CDLL | None = None
_FAST: ctypes.CDLL | None = None


class _Sockfprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def supported() -> bool:
    """Whether this machine's architecture is one the filter is written for."""
    return os.uname().machine in ("x86_64", "AMD64")


def libc_prctl():  # type: ignore[no-untyped-def]
    """libc's prctl as a ctypes function ``f(option, arg2, arg3, arg4, arg5)`` that does not save errno (cheaper
    per call: a forked child then writes to fewer pages); on failure, call :func:`prctl_errno` for the errno."""
    global _FAST
    if _FAST is None:
        _FAST = ctypes.CDLL(None)
    return _FAST.prctl


def libc_function(name: str):  # type: ignore[no-untyped-def]
    """A libc function through ctypes (errno not saved), e.g. ``unshare``."""
    libc_prctl()
    return getattr(_FAST, name)


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

    def __init__(self, part: str = "all", child_changes_uid: bool = False) -> None:
        code = build_filter(_PID_MARK, part, child_changes_uid)
        mark = struct.pack("=I", _PID_MARK)
        self._offsets = [i for i in range(0, len(code), 8) if code[i + 4 : i + 8] == mark]
        self._buf = ctypes.create_string_buffer(code, len(code))
        self._prog = _Sockfprog(len(code) // 8, ctypes.cast(self._buf, ctypes.c_void_p))
        self._ref = ctypes.byref(self._prog)
        self._prctl = libc_prctl()
        if self._prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(prctl_errno(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS) failed")

    def install(self, own_pid: int) -> None:
        for offset in self._offsets:
            struct.pack_into("=I", self._buf, offset + 4, own_pid)
        if self._prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._ref, 0, 0) != 0:
            errno_ = prctl_errno(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, self._ref, 0, 0)
            raise OSError(errno_, "prctl(PR_SET_SECCOMP) failed")


def install(own_pid: int) -> None:
    """Set no_new_privs and install the whole policy on the calling process; raises OSError on failure."""
    Prepared().install(own_pid)


def install_worker(child_changes_uid: bool = False) -> None:
    """Install the worker half of the policy on the calling process (the fork-server worker)."""
    Prepared("worker", child_changes_uid).install(0)
