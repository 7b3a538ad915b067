"""The sandboxed Python executor: every reward in Absolute Zero comes from running model-written code here.

A pool of fork-server workers (fresh interpreters started with ``subprocess``, never forks of the trainer) runs the
jobs. Each worker forks, before its first request, a *zygote* that never holds any job's data; every job runs in a
fresh child of the zygote, which reads only its own job from its own pipe. Public API: :class:`Executor`,
:class:`ExecResult`, :class:`Status`, :func:`parse_literal`, :func:`literals_equal`, :func:`static_check`,
:func:`probe_tier`, :func:`check_protections`, :data:`TIERS`.

Verdict integrity (every tier but ``none``; ``rlimits`` only when run as root)
-------------------------------------------------------------------------------
The result of a job depends only on its own code and input, never on another job run before it, beside it (the
same request, the same worker) or after it. ``tests/test_sandbox_integrity.py`` checks each point below by running
a hostile job and then honest jobs in the same worker, whose results must equal a fresh executor's, in the bwrap,
seccomp and rlimits tiers as root and in bwrap and seccomp as the unprivileged user ``nobody``:

- the worker, its zygote and sibling jobs are out of reach: no signals (``kill``, ``F_SETOWN``/``FIOSETOWN``
  routes), no access to their memory or descriptors (``/proc/<pid>/mem``, ``/proc/<pid>/fd``), no change to
  their limits, priority, CPU affinity, scheduler or OOM score; a job inherits no descriptor but its own four;
- no state survives a job: it cannot create, change or remove files, System V or POSIX IPC objects, processes or
  threads (as root in ``rlimits``, where nothing filters syscalls: a uid of its own, no second process, a private
  IPC namespace, and what it left in the world-writable directories removed);
- a child holds only its own job (no other job's code, inputs or results are in its memory);
- the worker trusts no result row: it checks every field, caps sizes and the number of rows, and call ``k`` of a
  child must answer ``k * timeout_s`` after the child started, whatever it writes. A job can forge its own rows,
  which gives it nothing it could not get by returning a value: gold outputs are compared outside the sandbox;
- validation runs each call in a fresh child, as every later use does, so a program cannot behave one way while
  it is validated and another afterwards;
- a job dies with its worker (the parent-death signal is set after the uid change).

Confinement, per tier (each includes everything of the tiers before it)
------------------------------------------------------------------------
``none``: a fresh child per job, killed by process group after the wall-clock limit, an empty environment, output
captured with a cap, typed results, oversized results rejected. Stops runaway loops and output, and Python state
(monkey-patched builtins, globals) passing between jobs. Does NOT stop anything malicious.

``rlimits``: adds address-space, CPU-time, file-size, open-file, process-count and core-dump limits. As root each
child slot runs as a uid of its own (no other process on the machine has it), with the guarantees above. Does NOT
stop: network access, reading world-readable files and the host's ``/proc``, filling the world-writable
directories while the job runs (what it left directly in ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock`` and
``/dev/mqueue`` is removed after it; files in other world-writable directories stay). As a non-root user it
is resource limits only: a job can signal, trace and write anything as you. Side effect as root: stdlib modules
that the worker did not preload cannot be imported from a root-only directory (the worker preloads math,
collections, itertools, functools, operator, heapq, bisect, re, string and copy).

``seccomp``: adds a hand-built BPF syscall filter (:mod:`azr.executor._seccomp`): no sockets, no new process or
thread, no exec, no signals but to itself, no ``F_SETOWN``-style signal routes, no ptrace or ``process_vm_*``, no
limits or scheduling of other processes, no change to the file system (no open for writing), no IPC objects, no
mount, namespace or identity changes, no bpf, perf, keyring, io_uring or module syscalls. Stops, in addition:
network, subprocesses, fork and thread bombs, every route to the worker and siblings above, writing any file.
Does NOT stop: reading files the job's uid may read (as a non-root user, your files, and ``/proc`` of your other
processes; the trainer is then made not dumpable, and the worker always is), the host's ``/proc`` (other
processes' command lines), kernel exploits through the allowed syscalls.

``bwrap`` (strongest; needs bubblewrap and working user namespaces): each worker runs inside bwrap as the
sandbox's pid 1 with all namespaces unshared (no network interface, its own PID and IPC namespaces), all
capabilities dropped, every mount read-only: ``/``, a ``/dev`` with device nodes only, empty tmpfs over ``/proc``,
``/tmp``, the user's home, ``/root``, ``/home``, ``/run``, ``/work`` and the top directory of the current path;
``/etc/shadow`` masked; an empty environment; nothing of the caller's inherited (not even stderr). Stops, in
addition: reading the user's files and secrets, seeing any process (``/proc`` is empty). Does NOT stop: reading
world-readable system files (``/usr``, ``/etc``) and, when run as root, root-owned files outside the hidden
directories; kernel bugs reachable through allowed syscalls; side channels; CPU contention. Not a defence against a
determined attacker with a kernel exploit: use a VM for that.

The static pre-check (:func:`static_check`) is defence in depth only; the sandbox is the boundary.
"""

from ._executor import Executor
from ._probes import check_protections
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
    "check_protections",
    "literals_equal",
    "parse_arguments",
    "parse_literal",
    "probe_tier",
    "static_check",
    "values_equal",
]
