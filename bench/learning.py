"""Does self-play teach the model? Evaluate the base model, train for M minutes, evaluate the checkpoints.

    .venv/bin/python bench/learning.py --minutes 60 [--config configs/cpu-smollm2.toml] [--out DIR]
        [--data-dir ../shared/data/benchmarks] [--section.field=value ...]

What it does, each stage skipped when its output already exists (so an interrupted run resumes where it stopped):

1. ``evals/base.json``: the base model on CRUXEval-O, CRUXEval-I (all 800 each) and the held-out probe, greedy,
   with ``--shots`` (2) worked demonstrations from the shipped demonstration file (``azr eval``).
2. ``run/``: ``azr train`` from the base model for ``--minutes`` of training wall time (summed over restarts; the
   time left is kept in ``state.json``), stopped with Ctrl-C semantics (SIGINT: the loop saves a checkpoint), or
   at step ``--max-steps`` if that comes first (a step budget: the same steps whatever else the machine runs;
   once a checkpoint of that step exists, later calls train no more unless ``--max-steps`` grows).
   Checkpoints are kept every ``--curve-every`` steps for the learning curve.
3. ``evals/step-N.json``: every kept checkpoint on the probe. One checkpoint is then chosen (``--select``):
   ``best-probe`` (the default) takes the highest probe score, the earliest on a tie, so the held-out probe acts as
   the validation set for early stopping; ``last`` takes the last checkpoint. The chosen one is evaluated on both
   CRUXEval sets (``evals/step-N-cruxeval.json``), and CRUXEval plays no part in the choice.
4. One table (before, after, gained, lost, exact McNemar p per benchmark; in the trace form a second one against
   the base in the sentence form, its best), the in-loop metrics of the first and
   last steps beside it, ``learning.json`` and the learning curve ``learning.png`` (needs matplotlib).

``--demo-think trace`` runs stages 1, 3 and 4 with the demonstrations' ``<think>`` holding the sandbox's trace of
the call, the form the CPU recipe trains on (``azr eval --demo-think trace``), in ``evals-trace/`` and
``learning-trace.json`` / ``.png``: run it again on a finished run to add that protocol beside the default one.

CRUXEval is a test set: use the probe for screening recipes and CRUXEval only to confirm the final one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from azr.evaluation.compare import compare_bench, shown_items
from azr.fsutil import atomic_write_text
from azr.metrics import read_metrics

ALL_BENCHES = ("cruxeval-o", "cruxeval-i", "probe")
TEST_BENCHES = ("cruxeval-o", "cruxeval-i")
SELECT = ("best-probe", "last")
IN_LOOP = (
    "solve/accuracy/deduction",
    "solve/accuracy/abduction",
    "solve/accuracy/induction",
    "propose/valid_rate/deduction",
    "propose/valid_rate/abduction",
    "propose/valid_rate/induction",
    "propose/format_rate/deduction",
    "solve/format_rate/deduction",
    "solve/copy_rate/deduction",
    "solve/copy_rate/abduction",
    "propose/copy_task_rate/deduction",
    "solve/copy_proof_accuracy/deduction",
    "propose/copy_task_rate/abduction",
)
EDGE = 5  # steps averaged at each end of the run for the in-loop columns
THINKS = ("sentence", "trace")


def evals_dir(out: Path, think: str = "sentence") -> Path:
    """Where a run's evaluations with the ``think`` form of demonstrations live."""
    return out / ("evals" if think == "sentence" else f"evals-{think}")


def result_stem(think: str = "sentence") -> str:
    return "learning" if think == "sentence" else f"learning-{think}"


def _azr(*args: str) -> list[str]:
    return [sys.executable, "-m", "azr", *args]


def _state(out: Path) -> dict[str, Any]:
    path = out / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"trained_s": 0.0}


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_text(out / "state.json", json.dumps(state, indent=1))


def evaluate(
    model: str, benches: tuple[str, ...], path: Path, args: argparse.Namespace, console: Console
) -> None:
    """``azr eval`` in its own process (the same command a user runs); writes ``path`` once it has finished."""
    if path.is_file():
        return
    cmd = _azr("eval", "--model", model, "--bench", ",".join(benches), "--shots", str(args.shots))
    cmd += ["--demo-think", args.demo_think]
    cmd += ["--json", str(path)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    console.print(f"[bold]eval[/bold] {model} on {', '.join(benches)}")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    console.print(f"  done in {time.perf_counter() - t0:.0f} s")


def train(args: argparse.Namespace, overrides: list[str], out: Path, console: Console) -> None:
    """Train until ``--minutes`` of training wall time are spent, across restarts."""
    state = _state(out)
    budget = args.minutes * 60
    run_dir = out / "run"
    while (
        state["trained_s"] < budget - 30
        and max((s for s, _ in checkpoints(run_dir)), default=0) < args.max_steps
    ):
        left = budget - state["trained_s"]
        resume = any(run_dir.glob("checkpoints/step-*"))
        cmd = _azr("train", "--steps", str(args.max_steps))
        cmd += ["--resume", str(run_dir)] if resume else ["--config", args.config, "--run-dir", str(run_dir)]
        keep = f"--training.keep_last={10_000}"
        cmd += [*overrides, f"--training.save_every={args.curve_every}", keep] if not resume else [keep]
        console.print(f"[bold]train[/bold] {left / 60:.1f} min left ({'resume' if resume else 'new run'})")
        child = subprocess.Popen(cmd)
        t0 = time.monotonic()
        start = state["trained_s"]
        while child.poll() is None:
            time.sleep(5)
            state["trained_s"] = start + time.monotonic() - t0
            _save_state(out, state)
            if time.monotonic() - t0 >= left and not state.get("stopping"):
                child.send_signal(signal.SIGINT)  # the loop finishes its update, saves and exits with 130
                state["stopping"] = True
        state.pop("stopping", None)
        state["trained_s"] = start + time.monotonic() - t0
        _save_state(out, state)
        if child.returncode not in (0, 130):
            raise SystemExit(f"azr train failed with exit status {child.returncode}; rerun to resume")
        if child.returncode == 0:
            break


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    found = []
    for p in sorted(run_dir.glob("checkpoints/step-*")):
        if (p / "model").is_dir():
            found.append((int(p.name.split("-")[1]), p / "model"))
    return found


def load_eval(out: Path, step: int, think: str = "sentence") -> dict[str, Any] | None:
    """A checkpoint's evaluation: its probe file merged with its CRUXEval file when there is one."""
    path = evals_dir(out, think) / ("base.json" if step == 0 else f"step-{step:06d}.json")
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    extra = evals_dir(out, think) / f"step-{step:06d}-cruxeval.json"
    if step and extra.is_file():
        more = json.loads(extra.read_text())
        report["results"] = {**report["results"], **more["results"]}
        report["records"] = report["records"] + more["records"]
    return report


def select(scores: list[tuple[int, float]], how: str) -> int:
    """The checkpoint to test: ``last``, or ``best-probe`` (highest probe score, the earliest on a tie)."""
    if how == "last":
        return scores[-1][0]
    best = max(score for _, score in scores)
    return next(step for step, score in scores if score == best)


def compare(
    base: dict[str, Any], final: dict[str, Any], data_dir: str | None = None
) -> dict[str, dict[str, Any]]:
    """Per benchmark present in both: the paired McNemar test of base (before) against final (after); for
    CRUXEval also a row on the items where copying the shown input/output cannot score, and the copy counts
    (``azr compare``'s shortcut accounting)."""
    rows = {}
    for bench in base["results"]:
        shown = shown_items(base, final, bench, data_dir)
        if bench in final["results"] and (c := compare_bench(base, final, bench, shown)) is not None:
            rows[bench] = asdict(c.stats)
            if c.copy:
                rows[bench] |= {"copies_before": c.copy.copies_before, "copies_after": c.copy.copies_after,
                                "copy_baseline": c.copy.copy_baseline}  # fmt: skip
                rows[f"{bench} (copy cannot score)"] = asdict(c.copy.no_copy)
    return rows


def in_loop(run_dir: Path) -> dict[str, dict[str, float]]:
    """Mean of each in-loop metric over the first and the last ``EDGE`` steps."""
    rows = [r for r in read_metrics(run_dir) if "step" in r]
    out = {}
    for key in IN_LOOP:
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"first": sum(values[:EDGE]) / len(values[:EDGE]),
                        "last": sum(values[-EDGE:]) / len(values[-EDGE:])}  # fmt: skip
    return out


def curve(out: Path, steps: list[int], think: str = "sentence") -> dict[str, list[tuple[int, float]]]:
    """Held-out score per benchmark at step 0 (base) and at every evaluated checkpoint."""
    points: dict[str, list[tuple[int, float]]] = {}
    for step in [0, *steps]:
        if (report := load_eval(out, step, think)) is not None:
            for bench, result in report["results"].items():
                points.setdefault(bench, []).append((step, result["score"]))
    return points


def plot(
    path: Path, points: dict[str, list[tuple[int, float]]], run_dir: Path, console: Console
) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print(f"[yellow]no {path.name}: pip install matplotlib[/yellow]")
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for bench, pts in points.items():
        ax1.plot([s for s, _ in pts], [100 * v for _, v in pts], marker="o", label=bench)
    ax1.set(xlabel="step", ylabel="held-out pass@1 (%)", title=f"held-out (greedy, 2-shot, {path.stem})")
    ax1.legend(fontsize=7)
    rows = [r for r in read_metrics(run_dir) if "step" in r]
    for key in IN_LOOP[:6]:
        xs = [r["step"] for r in rows if key in r]
        ys = [r[key] for r in rows if key in r]
        smooth = [sum(ys[max(0, i - 4) : i + 1]) / len(ys[max(0, i - 4) : i + 1]) for i in range(len(ys))]
        ax2.plot(xs, smooth, label=key)
    ax2.set(xlabel="step", ylabel="rate (5-step mean)", title="in-loop")
    ax2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def print_tests(tests: dict[str, Any], title: str, console: Console) -> None:
    table = Table(title=title)
    for col in ("benchmark", "n", "before", "after", "gained", "lost", "McNemar p"):
        table.add_column(col, justify="right" if col != "benchmark" else "left")
    for bench, t in tests.items():
        table.add_row(bench, str(t["n"]), str(t["before"]), str(t["after"]), str(t["gained"]),
                      str(t["lost"]), f"{t['p_value']:.3g}")  # fmt: skip
    console.print(table)
    for bench, t in tests.items():
        if "copies_before" in t:
            console.print(f"{bench}: answers that copy what the prompt shows {t['copies_before']} -> "
                          f"{t['copies_after']} of {t['n']}; copying scores on {t['copy_baseline']} items")  # fmt: skip


def report(out: Path, chosen: int, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    run_dir = out / "run"
    found = checkpoints(run_dir)
    final = load_eval(out, chosen, args.demo_think)
    assert final is not None
    how = "the last" if args.select == "last" else "the best on the probe"
    trained = _state(out)["trained_s"] / 60
    title = f"base vs step {chosen}, {how} of {len(found)} checkpoints ({trained:.0f} min of training)"
    tests: dict[str, Any] = {}
    for base_think in dict.fromkeys((args.demo_think, "sentence")):  # and the base in its best form
        if (base := load_eval(out, 0, base_think)) is not None:
            tests[base_think] = compare(base, final, args.data_dir)
            forms = f"{args.demo_think} demonstrations" + (
                f", the base with {base_think} ones" if base_think != args.demo_think else ""
            )
            print_tests(tests[base_think], f"{title}, {forms}", console)
    loop = in_loop(run_dir)
    side = Table(title=f"in-loop metrics (mean of the first and last {EDGE} steps)")
    for col in ("metric", "first", "last"):
        side.add_column(col)
    for key, v in loop.items():
        side.add_row(key, f"{v['first']:.3f}", f"{v['last']:.3f}")
    console.print(side)
    points = curve(out, [s for s, _ in found], args.demo_think)
    stem = result_stem(args.demo_think)
    png = plot(out / f"{stem}.png", points, run_dir, console)
    result = {
        "minutes": args.minutes,
        "max_steps": args.max_steps,
        "trained_s": _state(out)["trained_s"],
        "config": args.config,
        "steps": found[-1][0],
        "select": args.select,
        "demo_think": args.demo_think,
        "selected": chosen,
        "machine": _cpu_model(),
        "tests": tests.get(args.demo_think, {}),
        **(
            {"tests_vs_sentence_base": tests["sentence"]}
            if args.demo_think != "sentence" and "sentence" in tests
            else {}
        ),
        "in_loop": loop,
        "curve": points,
        "png": str(png) if png else None,
    }
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=1))
    console.print(f"wrote {out / f'{stem}.json'}" + (f" and {png}" if png else ""))
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, required=True, help="training wall time")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=100_000,
        help="stop training at this step even if minutes are left (a step budget that noise cannot change)",
    )
    parser.add_argument("--config", default="configs/cpu-smollm2.toml")
    parser.add_argument("--out", default="", help="output directory (default: runs/learning-<time>)")
    parser.add_argument(
        "--data-dir", default=os.environ.get("AZR_DATA_DIR", ""), help="local benchmark files"
    )
    parser.add_argument("--shots", type=int, default=2)
    parser.add_argument(
        "--demo-think",
        choices=THINKS,
        default="sentence",
        help="the demonstrations' <think> in every evaluation (azr eval --demo-think); trace writes evals-trace/",
    )
    parser.add_argument("--curve-every", type=int, default=10, help="keep a checkpoint every N steps")
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument(
        "--select", choices=SELECT, default="best-probe", help="which checkpoint CRUXEval tests"
    )
    args, overrides = parser.parse_known_args()
    bad = [o for o in overrides if not (o.startswith("--") and "." in o.split("=")[0])]
    if bad:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    out = Path(args.out or f"runs/learning-{time.strftime('%Y%m%d-%H%M%S')}")
    evals = evals_dir(out, args.demo_think)
    evals.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 160)  # a log file gets whole table rows
    console.print(f"learning bench in {out}")
    evaluate(args.base_model, ALL_BENCHES, evals / "base.json", args, console)
    train(args, overrides, out, console)
    found = checkpoints(out / "run")
    if not found:
        raise SystemExit("no checkpoint was written: train longer (--minutes)")
    for step, model in found:
        evaluate(str(model), ("probe",), evals / f"step-{step:06d}.json", args, console)
    scores = [(step, load_eval(out, step, args.demo_think)["results"]["probe"]["score"]) for step, _ in found]
    chosen = select(scores, args.select)
    console.print(f"checkpoint for CRUXEval: step {chosen} ({args.select}; probe {dict(scores)})")
    if not all(b in load_eval(out, chosen, args.demo_think)["results"] for b in TEST_BENCHES):
        path = evals / f"step-{chosen:06d}-cruxeval.json"
        evaluate(str(dict(found)[chosen]), TEST_BENCHES, path, args, console)
    report(out, chosen, args, console)


if __name__ == "__main__":
    main()
