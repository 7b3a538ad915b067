"""``azr seed``: run the seeding stage alone (fill a run's empty buffers), with a progress bar."""

from __future__ import annotations

import argparse

HELP = "Run the seeding stage alone (fill the task buffers)."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", help="Run directory to create or fill (its tasks.sqlite holds the buffers)."
    )
    parser.add_argument("--config", help="TOML run file (default: the CPU SmolLM2 recipe, as azr train).")
    parser.add_argument("--model", help="Shortcut for --model.name=NAME.")
    parser.add_argument(
        "--seed-tasks-file",
        "--seed-file",  # the old name, still accepted
        help="Import seed tasks from a JSONL file in the reference's format.",
    )
    parser.epilog = (
        "Any config key can be overridden: --section.field=value (e.g. --selfplay.n_seed_tasks=32)."
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from azr.commands.train import split_overrides
    from azr.config import DEFAULT_RECIPE, load
    from azr.loop import CONFIG_FILE, build
    from azr.selfplay.seeding import seed_buffers
    from azr.terminal import progress_bars

    run_dir = Path(args.run_dir)
    overrides = split_overrides(args)
    if args.seed_tasks_file:
        overrides.append(f'selfplay.seed_tasks_file="{args.seed_tasks_file}"')
    saved = run_dir / CONFIG_FILE
    cfg = load(saved if saved.is_file() else (args.config or DEFAULT_RECIPE), overrides)
    console = Console()
    run = build(cfg, run_dir, console)
    try:
        with progress_bars(cfg, console) as progress:
            stats = seed_buffers(run.selfplay, progress=progress.callback)
    finally:
        run.executor.close()
        run.store.close()
    console.print(stats.summary)
    return 0
