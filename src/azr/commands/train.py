"""``azr train``: self-play on a real model (seeding, then propose/solve/update steps)."""

from __future__ import annotations

import argparse

HELP = "Run self-play: seed the buffers, then propose, solve and update."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="TOML run file (default: the CPU SmolLM2 recipe, configs/cpu-smollm2.toml, shipped as "
        "azr/recipes/cpu-smollm2.toml; configs/paper-7b.toml holds the paper's settings).",
    )
    parser.add_argument("--model", help="Shortcut for --model.name=NAME.")
    parser.add_argument(
        "--run-dir", help="Where checkpoints, metrics and the task store go (default: runs/<time>)."
    )
    parser.add_argument("--steps", type=int, help="Total number of steps to reach (also with --resume).")
    parser.add_argument("--resume", metavar="RUN_DIR", help="Continue a run from its newest checkpoint.")
    parser.add_argument(
        "--help-config",
        action="store_true",
        help="List every config key with the value this command would use (with --config and overrides: theirs; "
        "without: the CPU recipe's) and its meaning.",
    )
    parser.epilog = "Any config key can be overridden: --section.field=value (e.g. --training.lr=1e-5)."


def split_overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(getattr(args, "overrides", []) or [])
    if args.model:
        overrides.append(f"model.name={args.model!r}".replace("'", '"'))
    return overrides


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from azr.config import DEFAULT_RECIPE, describe, load
    from azr.errors import AzrError

    config = args.config or str(DEFAULT_RECIPE)
    if args.help_config:
        print(
            f"# the values `azr train` uses with --config {config}{' and the overrides' if split_overrides(args) else ''}"
        )
        print(describe(load(config, split_overrides(args))))
        return 0
    if args.resume and args.run_dir and Path(args.resume) != Path(args.run_dir):
        raise AzrError("give either --resume RUN_DIR or --run-dir, not both")
    from azr.loop import prepare_config, train, with_steps

    run_dir = Path(args.resume or args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    _start_accelerate_cpu_processes(args, run_dir)
    cfg = prepare_config(config, split_overrides(args), run_dir, resume=bool(args.resume))
    cfg = with_steps(cfg, args.steps)
    return train(cfg, run_dir, resume=bool(args.resume))


def _start_accelerate_cpu_processes(args: argparse.Namespace, run_dir: object) -> None:
    """Under ``accelerate launch --cpu --num_processes N``, which starts one process, start the N (azr.launch);
    every process gets the same run directory."""
    from azr.launch import accelerate_cpu_processes, relaunch

    processes = accelerate_cpu_processes()
    if processes:
        argv = list(args.argv)
        if not (args.resume or args.run_dir):
            argv += ["--run-dir", str(run_dir)]
        relaunch(processes, argv)
