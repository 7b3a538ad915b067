"""The gain of one recipe over several training seeds: per-seed tables, the mean gain and its 95% interval.

    .venv/bin/python bench/seeds.py runs/learning-J runs/learning-K runs/learning-L [--data-dir DIR] [--out F]

Each argument is a ``bench/learning.py`` output directory (its ``learning.json`` names the checkpoint it tested).
For CRUXEval-O, CRUXEval-I, their items where copying the shown input/output cannot score, and the probe: each
seed's before, after, gained, lost and McNemar p, then the mean gain over the seeds in points with a two-level
bootstrap 95% interval (seeds, then items; :mod:`azr.evaluation.seeds`). Writes the same as JSON (default
``seeds.json`` beside the first run).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from azr.evaluation.compare import greedy_verdicts, mcnemar, shown_items
from azr.evaluation.seeds import seed_gain
from azr.fsutil import atomic_write_text
from learning import load_eval

BENCHES = ("cruxeval-o", "cruxeval-i", "probe")


def paired(run: Path, data_dir: str | None) -> dict[str, list[tuple[bool, bool]]]:
    """One run's paired verdicts per benchmark (and per CRUXEval set's items where copying cannot score)."""
    chosen = json.loads((run / "learning.json").read_text())["selected"]
    base, final = load_eval(run, 0), load_eval(run, chosen)
    if base is None or final is None:
        raise SystemExit(f"{run}: evals/base.json or the chosen checkpoint's evaluation is missing")
    out = {}
    for bench in BENCHES:
        va, vb = greedy_verdicts(base, bench), greedy_verdicts(final, bench)
        common = [i for i in va if i in vb]
        if not common:
            continue
        out[bench] = [(va[i], vb[i]) for i in common]
        shown = shown_items(base, final, bench, data_dir)
        if shown:
            out[f"{bench} (copy cannot score)"] = [
                (va[i], vb[i]) for i in common if i in shown and not shown[i].copy_can_score
            ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument(
        "--data-dir", default=None, help="CRUXEval file, for results files without the shown texts"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = [paired(r, args.data_dir) for r in args.runs]
    console, result = Console(), {"runs": [str(r) for r in args.runs], "benches": {}}
    for bench in runs[0]:
        seeds = [r[bench] for r in runs if bench in r]
        table = Table(title=bench)
        for col in ("run", "n", "before", "after", "gained", "lost", "p", "gain (points)"):
            table.add_column(col, justify="left" if col == "run" else "right")
        rows: list[dict[str, Any]] = []
        for run, pairs in zip(args.runs, seeds, strict=True):
            s = mcnemar([b for b, _ in pairs], [a for _, a in pairs])
            gain = 100.0 * (s.after - s.before) / s.n
            rows.append({"run": str(run), **asdict(s), "gain_points": gain})
            table.add_row(run.name, str(s.n), str(s.before), str(s.after), str(s.gained), str(s.lost),
                          f"{s.p_value:.3g}", f"{gain:+.2f}")  # fmt: skip
        g = seed_gain(seeds)
        table.caption = (
            f"mean gain {g.mean:+.2f} points, 95% interval [{g.low:+.2f}, {g.high:+.2f}] ({g.n_seeds} seeds)"
        )
        console.print(table)
        result["benches"][bench] = {"seeds": rows, "mean": g.mean, "low": g.low, "high": g.high}
    out = args.out or args.runs[0].parent / "seeds.json"
    atomic_write_text(out, json.dumps(result, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
