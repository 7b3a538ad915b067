"""The gain of one recipe (or of several, an ablation) over training seeds: per-seed tables, mean gain, 95% interval.

    .venv/bin/python bench/seeds.py runs/learning-J runs/learning-K runs/learning-L [--data-dir DIR] [--out F]
    .venv/bin/python bench/seeds.py default=runs/learning-J,runs/learning-K no-pg=runs/learning-L,runs/learning-M

Each run is a ``bench/learning.py`` output directory (its ``learning.json`` names the checkpoint it tested); runs
given as ``ARM=DIR,DIR,...`` are grouped into arms (plain directories form one arm, "runs"). For CRUXEval-O,
CRUXEval-I, the probe and its deduction and abduction parts, and for each of them but the whole probe its items
where copying the shown input/output cannot score: each seed's before, after, gained, lost and McNemar p, then
the mean gain over the seeds in points with a two-level bootstrap 95% interval (seeds, then items; :mod:`azr.evaluation.seeds`); with several arms, one last table of arm x benchmark.
Writes the same as JSON (default ``seeds.json`` beside the first run). ``--demo-think trace`` reads the runs'
trace-form evaluations (``bench/learning.py --demo-think trace``) instead, and ``--base-demo-think sentence``
pairs them with the base in the sentence form (its best form on the probe).
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
from learning import THINKS, load_eval, result_stem

BENCHES = ("cruxeval-o", "cruxeval-i", "probe", "probe/deduction", "probe/abduction")


def paired(
    run: Path, data_dir: str | None, think: str = "sentence", base_think: str | None = None
) -> dict[str, list[tuple[bool, bool]]]:
    """One run's paired verdicts per benchmark (and per CRUXEval set's items where copying cannot score), from
    the evaluations with the ``think`` form of demonstrations; the base's in the ``base_think`` form (default: the
    same)."""
    chosen = json.loads((run / f"{result_stem(think)}.json").read_text())["selected"]
    base, final = load_eval(run, 0, base_think or think), load_eval(run, chosen, think)
    if base is None or final is None:
        raise SystemExit(f"{run}: the base's or the chosen checkpoint's evaluation is missing ({think})")
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


def arms(specs: list[str]) -> dict[str, list[Path]]:
    """``["a=d1,d2", "d3"]`` -> ``{"a": [d1, d2], "runs": [d3]}``, in the order given."""
    out: dict[str, list[Path]] = {}
    for spec in specs:
        name, sep, dirs = spec.partition("=")
        arm, paths = (name, dirs.split(",")) if sep else ("runs", [spec])
        out.setdefault(arm, []).extend(Path(d) for d in paths if d)
    return out


def arm_tables(
    arm: str,
    dirs: list[Path],
    data_dir: str | None,
    console: Console,
    think: str = "sentence",
    base_think: str | None = None,
) -> dict[str, Any]:
    """One arm: a table per benchmark (a row per seed, the mean gain and interval as caption)."""
    runs = [paired(r, data_dir, think, base_think) for r in dirs]
    benches: dict[str, Any] = {}
    for bench in runs[0]:
        having = [(d, r[bench]) for d, r in zip(dirs, runs, strict=True) if bench in r]
        seeds = [pairs for _, pairs in having]
        table = Table(title=f"{arm}: {bench}")
        for col in ("run", "n", "before", "after", "gained", "lost", "p", "gain (points)"):
            table.add_column(col, justify="left" if col == "run" else "right")
        rows: list[dict[str, Any]] = []
        for run, pairs in having:
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
        benches[bench] = {"seeds": rows, "mean": g.mean, "low": g.low, "high": g.high, "n_seeds": g.n_seeds}
    return benches


def summary(result: dict[str, dict[str, Any]], console: Console) -> None:
    """Arm x benchmark: mean gain [95% interval] (seeds)."""
    benches = list(dict.fromkeys(b for arm in result.values() for b in arm))
    table = Table(title="mean gain in points [95% interval] (seeds), per arm")
    for col in ("arm", *benches):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, res in result.items():
        cells = [
            f"{r['mean']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] ({r['n_seeds']})"
            if (r := res.get(b))
            else ""
            for b in benches
        ]
        table.add_row(arm, *cells)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="DIR, or ARM=DIR,DIR,... for an arm of an ablation")
    parser.add_argument(
        "--data-dir", default=None, help="CRUXEval file, for results files without the shown texts"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--demo-think",
        choices=THINKS,
        default="sentence",
        help="which evaluations (bench/learning.py --demo-think)",
    )
    parser.add_argument(
        "--base-demo-think",
        choices=THINKS,
        default=None,
        help="the base's form, when it differs (the base's best form on the probe: sentence)",
    )
    args = parser.parse_args()
    # Wide enough for the arm x benchmark table when the output goes to a file (rich assumes 80 columns there).
    groups, console = arms(args.runs), Console(width=None if sys.stdout.isatty() else 220)
    result = {
        arm: arm_tables(arm, dirs, args.data_dir, console, args.demo_think, args.base_demo_think)
        for arm, dirs in groups.items()
    }
    if len(result) > 1:
        summary(result, console)
    first = next(iter(groups.values()))[0]
    out = args.out or first.parent / (
        "seeds.json" if args.demo_think == "sentence" else f"seeds-{args.demo_think}.json"
    )
    payload = {"arms": {arm: [str(d) for d in dirs] for arm, dirs in groups.items()}, "results": result}
    atomic_write_text(out, json.dumps(payload, indent=1))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
