"""Seconds per self-play step of the default CPU config, broken down by phase.

    AZR_CACHE=/tmp/azrcache .venv/bin/python bench/step.py [--steps 3] [--config configs/cpu-smollm2.toml]
        [--run-dir DIR] [--section.field=value ...]

Runs the real loop (real model, sandbox and updates) into a temporary run directory and reads the per-phase
timings every step logs (``perf/seconds/*`` in ``metrics.jsonl``): generation, sandbox execution, the policy
update and the store. ``--run-dir`` keeps the run (for ``azr report``); otherwise a temporary one is used. Prints a table, the mean against the 90 s/step goal, and writes ``bench/results/step.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the azr command does, before torch is imported

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from azr.config import load
from azr.loop import train, with_steps
from azr.metrics import read_metrics
from azr.runtime import configure_process

PHASES = ("generate", "execute", "update", "store", "step")
GOAL_S = 90.0


def main() -> None:
    configure_process()  # as the azr command does (azr.runtime)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu-smollm2.toml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="bench/results/step.json")
    parser.add_argument("--run-dir", default="", help="keep the run here instead of a temporary directory")
    args, overrides = parser.parse_known_args()
    cfg = with_steps(load(args.config, overrides), args.steps)
    console = Console()
    if args.run_dir:
        train(cfg, Path(args.run_dir), console=console)
        rows = read_metrics(Path(args.run_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="azr-step-bench-") as tmp:
            train(cfg, Path(tmp) / "run", console=console)
            rows = read_metrics(Path(tmp) / "run")
    table = Table(title=f"seconds per self-play step ({args.config})")
    for column in ("step", *PHASES, "tok/s"):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [f"{r.get(f'perf/seconds/{p}', 0.0):.1f}" for p in PHASES]
        table.add_row(str(r["step"]), *cells, f"{r.get('perf/tokens_per_s', 0.0):.1f}")
    console.print(table)
    mean = {p: statistics.mean(r.get(f"perf/seconds/{p}", 0.0) for r in rows) for p in PHASES}
    console.print(
        f"mean {mean['step']:.1f} s/step; goal <= {GOAL_S:.0f} s: ratio {GOAL_S / mean['step']:.2f}x"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"config": args.config, "steps": rows, "mean_seconds": mean, "goal_s": GOAL_S}, indent=2)
    )


if __name__ == "__main__":
    main()
