"""The sandboxed Python executor: every reward in Absolute Zero comes from running model-written code here.

A pool of fork-server workers (fresh interpreters started with ``subprocess``, never forks of the trainer) forks
one child per job. Public API: :class:`Executor`, :class:`ExecResult`, :class:`Status`, :func:`parse_literal`,
:func:`literals_equal`, :func:`static_check`, :func:`probe_tier`, :data:`TIERS`.

Threat model, per tier (each tier includes everything of the tiers before it)
----------------------------------------------------------------------------
``none``: a fresh forked child per job, killed by process group after the wall-clock limit, in a fresh temporary
working directory with an empty environment; stdout/stderr captured with a cap; results are typed and oversized
results rejected. Stops: infinite loops (also inside C calls), runaway output, state leaking from one job into the
next (monkey-patched builtins, globals: every job starts from the clean zygote). Does NOT stop anything malicious.

``rlimits``: adds address-space, CPU-time, file-size, open-file, process-count and core-dump limits; when running
as root, the child drops to uid/gid ``nobody``. Stops: memory bombs, CPU burn after a lost kill, huge files. As
``nobody`` it also cannot write root's files, read root-only files, or signal the worker. Does NOT stop: network
access, fork bombs up to the process limit (per uid, and not enforced for root), reading world-readable files.
Side effect as root: stdlib modules that the worker did not preload cannot be imported from a root-only
directory (the worker preloads the common ones: math, collections, itertools, re, heapq, ...).

``seccomp``: adds a hand-built BPF syscall filter (see :mod:`azr.executor._seccomp`): no sockets at all, no
fork/vfork/execve (threads allowed), no signals except to itself, no ptrace or process_vm_*, no setpgid/setsid (so
the group kill always works), no mount/namespace/identity changes, and no bpf, perf, keyring, io_uring or module
syscalls. Stops: network, subprocesses, fork bombs, killing the worker or sibling jobs, debugger-style escapes.
Does NOT stop: reading files the uid may read, writing files the uid may write (as a non-root user, that is the
user's own files outside the working directory), kernel exploits through the allowed syscalls.

``bwrap`` (strongest; needs bubblewrap and working user namespaces): each worker runs inside bwrap with all
namespaces unshared (no network interface at all, its own PID namespace, so other processes are invisible), all
capabilities dropped, a read-only view of ``/``, private tmpfs over ``/tmp``, the user's home, ``/root``,
``/home``, ``/run``, ``/work`` and the top directory of the current path, ``/etc/shadow`` masked, and an empty
environment. Stops, in addition: writing or deleting any file outside the job's tmpfs working directory, reading
the user's files and secrets, seeing or signalling host processes. Does NOT stop: reading world-visible system
files (``/usr``, ``/etc``) and, when run as root, root-owned files outside the hidden directories; kernel bugs
reachable through allowed syscalls; side channels; CPU contention. Not a defence against a determined attacker
with a kernel exploit: use a VM for that.

The static pre-check (:func:`static_check`) is defence in depth only; the sandbox is the boundary.
"""

from ._executor import Executor
from ._static import BANNED_MODULES, static_check
from ._tiers import TIERS, available_tiers, probe_tier
from ._types import ExecResult, Status
from ._values import literals_equal, parse_arguments, parse_literal, values_equal

__all__ = [
    "BANNED_MODULES",
    "TIERS",
    "ExecResult",
    "Executor",
    "Status",
    "available_tiers",
    "literals_equal",
    "parse_arguments",
    "parse_literal",
    "probe_tier",
    "static_check",
    "values_equal",
]
