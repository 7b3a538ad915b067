"""``accelerate launch --cpu --num_processes N``: start the N processes accelerate does not.

With ``--cpu``, accelerate starts several processes only through ``mpirun`` and an MPI hostfile; without one it runs
the script once, with ``MASTER_ADDR``/``MASTER_PORT`` set and no ``WORLD_SIZE`` (accelerate 1.x). ``azr train``
notices this, reads N from the launcher's own command line with accelerate's own argument parser (and its config
file for what the command line leaves out), and replaces itself with ``torch.distributed.run`` (what ``torchrun``
runs) for N processes on this machine at accelerate's address and port. The processes then train exactly as under
``torchrun`` (:mod:`azr.distributed`). Several machines on CPU are refused: run ``torchrun`` on each.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from azr.errors import AzrError

__all__ = ["accelerate_cpu_processes", "relaunch_argv"]


def _parent_argv() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _launch_args(parent_argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``accelerate launch`` in the parent's command line, or None if it is not one."""
    for i, arg in enumerate(parent_argv[:-1]):
        if Path(arg).name in ("accelerate", "accelerate-launch") or arg.endswith(
            "accelerate/commands/launch.py"
        ):
            rest = list(parent_argv[i + 1 :])
            return rest[1:] if rest and rest[0] == "launch" else rest
    return None


def accelerate_cpu_processes(
    environ: Mapping[str, str] | None = None, parent_argv: Sequence[str] | None = None
) -> int | None:
    """N when this process is the single one ``accelerate launch --cpu --num_processes N`` (N > 1) started;
    None otherwise (no launcher, a launcher that started the processes itself, or N = 1)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env or env.get("ACCELERATE_USE_CPU", "").lower() != "true" or "MASTER_ADDR" not in env:
        return None
    args = _launch_args(_parent_argv() if parent_argv is None else parent_argv)
    if args is None:
        return None
    from accelerate.commands.launch import launch_command_parser

    parsed, _ = launch_command_parser().parse_known_args(args)
    processes, machines = parsed.num_processes, parsed.num_machines
    if processes is None or machines is None:
        from accelerate.commands.config import default_config_file, load_config_from_file

        path = parsed.config_file or default_config_file
        if Path(path).is_file():
            config = load_config_from_file(path)
            processes = processes if processes is not None else config.num_processes
            machines = machines if machines is not None else config.num_machines
    if machines and machines > 1:
        raise AzrError(
            "accelerate launch --cpu on several machines needs MPI; run `torchrun --nnodes M --nproc_per_node N "
            "-m azr train ...` on each machine instead"
        )
    return processes if processes and processes > 1 else None


def relaunch_argv(processes: int, environ: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """The ``torch.distributed.run`` command that starts ``processes`` copies of ``python -m azr argv``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(processes),
        "--master_addr",
        environ["MASTER_ADDR"],
        "--master_port",
        environ.get("MASTER_PORT", "29500"),
        "-m",
        "azr",
        *argv,
    ]


def relaunch(processes: int, argv: Sequence[str]) -> None:
    """Replace this process with the N-process launch (does not return)."""
    command = relaunch_argv(processes, os.environ, argv)
    print(
        f"azr: accelerate started one CPU process; starting {processes} with torch.distributed.run",
        flush=True,
    )
    os.execv(command[0], command)
