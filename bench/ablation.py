"""What in the recipe learns: every arm x training seed as a ``bench/learning.py`` run, then ``bench/seeds.py``.

    .venv/bin/python bench/ablation.py --out runs/ablation --seeds 1,2,3 [--arms default,no-pg,no-nll]
        [--minutes 120 --max-steps 33 --curve-every 8] [--demo-think trace] [--data-dir DIR]
        [--adopt ARM-seedN=DIR ...] [--dry-run] [--section.field=value ...]

The arms (:data:`ARMS`): ``default``, the config as it is; ``no-pg``, ``--algorithm.policy_gradient=false`` (the
policy-gradient loss of proposer and solver zeroed, the likelihood terms kept); ``no-nll``,
``--algorithm.solve_nll_coef=0 --algorithm.trace_nll_coef=0`` (the paper's RL alone). Each run is
``OUT/ARM-seedN`` with ``--training.seed=N`` and every extra ``--section.field=value``, run seed by seed (all arms
of seed 1, then of seed 2, ...), so a campaign stopped early leaves its arms balanced.

The base model is evaluated once: the first run's ``evals/base.json`` is kept in ``OUT/base/`` and copied into
every later run before it starts, so all arms are paired with one base evaluation (evaluate it on the machine type
the runs train on). ``--demo-think trace`` then adds each finished run's trace-form evaluations
(``bench/learning.py --demo-think trace``), the base's shared the same way. ``--adopt ARM-seedN=DIR`` counts a run
made before (a ``bench/learning.py`` directory) as that arm and seed, by a symlink, instead of training it again.

Every stage resumes (``bench/learning.py`` skips what exists): rerun the same command after a stop. At the end,
``bench/seeds.py`` over the arms' finished runs writes ``OUT/seeds.json`` (and ``OUT/seeds-trace.json``, against
the base in the sentence form, its best).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARMS: dict[str, tuple[str, ...]] = {
    "default": (),
    "no-pg": ("--algorithm.policy_gradient=false",),
    "no-nll": ("--algorithm.solve_nll_coef=0", "--algorithm.trace_nll_coef=0"),
}


def plan(arms: list[str], seeds: list[int]) -> list[tuple[str, tuple[str, ...]]]:
    """The runs in order, seed by seed: (directory name, the overrides that make that arm and seed)."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms or not seeds:
        raise SystemExit(
            f"arms must be some of {', '.join(ARMS)} and seeds at least one (got {arms}, {seeds})"
        )
    return [(f"{arm}-seed{seed}", (*ARMS[arm], f"--training.seed={seed}")) for seed in seeds for arm in arms]


def share_base(out: Path, run: Path, think: str) -> None:
    """Keep the base evaluation of the ``think`` form in ``OUT/base`` and give it to ``run`` before it starts."""
    folder = "evals" if think == "sentence" else f"evals-{think}"
    shared, own = out / "base" / folder / "base.json", run / folder / "base.json"
    if shared.is_file() and not own.is_file():
        own.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, own)
    elif own.is_file() and not shared.is_file():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(own, shared)


def adopt(out: Path, items: list[str], names: list[str], dry: bool = False) -> dict[str, Path]:
    """``ARM-seedN=DIR``: link a finished earlier run into the campaign under that name (``dry``: only check);
    returns each adopted name's run directory."""
    found = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or name not in names or not (Path(target) / "learning.json").is_file():
            raise SystemExit(f"--adopt {item}: use ARM-seedN=DIR with a planned name and a finished run")
        link, found[name] = out / name, Path(target).resolve()
        if dry or (link.is_symlink() and link.resolve() == found[name]):
            continue
        if link.exists() or link.is_symlink():
            raise SystemExit(f"--adopt {item}: {link} exists already; remove it to adopt another run")
        link.symlink_to(found[name], target_is_directory=True)
    return found


def result_name(think: str) -> str:
    """What ``bench/learning.py`` writes last, once a run is finished in that form."""
    return "learning.json" if think == "sentence" else f"learning-{think}.json"


def learning_cmd(run: Path, overrides: tuple[str, ...], args: argparse.Namespace, think: str) -> list[str]:
    cmd = [sys.executable, str(HERE / "learning.py"), "--out", str(run), "--minutes", str(args.minutes)]
    cmd += [
        "--max-steps",
        str(args.max_steps),
        "--curve-every",
        str(args.curve_every),
        "--config",
        args.config,
    ]
    cmd += ["--demo-think", think] + (["--data-dir", args.data_dir] if args.data_dir else [])
    return cmd + list(overrides)


def seeds_cmd(out: Path, finished: dict[str, list[Path]], args: argparse.Namespace, think: str) -> list[str]:
    cmd = [sys.executable, str(HERE / "seeds.py")]
    cmd += [f"{arm}={','.join(str(d) for d in dirs)}" for arm, dirs in finished.items() if dirs]
    cmd += ["--out", str(out / result_name(think).replace("learning", "seeds"))]
    cmd += ["--data-dir", args.data_dir] if args.data_dir else []
    return cmd + (["--demo-think", think, "--base-demo-think", "sentence"] if think != "sentence" else [])


def _run(cmd: list[str], dry: bool) -> None:
    print("$ " + " ".join(cmd), flush=True)
    if not dry and subprocess.run(cmd).returncode != 0:
        raise SystemExit("a stage failed (its output is above); rerun the same command to resume")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="1,2,3", help="training seeds, comma-separated")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"some of {', '.join(ARMS)}")
    parser.add_argument("--minutes", type=float, default=120.0)
    parser.add_argument("--max-steps", type=int, default=33)
    parser.add_argument("--curve-every", type=int, default=8)
    parser.add_argument("--config", default="configs/cpu-smollm2.toml")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--demo-think", choices=("sentence", "trace"), default="sentence",
                        help="trace: also the trace-form evaluations of every finished run")  # fmt: skip
    parser.add_argument("--adopt", action="append", default=[], help="ARM-seedN=DIR, a finished earlier run")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run and write nothing")
    args, overrides = parser.parse_known_args(argv)
    if bad := [o for o in overrides if not (o.startswith("--") and "." in o.split("=")[0])]:
        parser.error(f"unrecognised arguments: {' '.join(bad)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: use integers separated by commas, e.g. 1,2,3")
    runs = plan([a.strip() for a in args.arms.split(",") if a.strip()], seeds)
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
    adopted = adopt(args.out, args.adopt, [name for name, _ in runs], args.dry_run)
    thinks = ["sentence"] + (["trace"] if args.demo_think == "trace" else [])
    where = {n: adopted[n] if args.dry_run and n in adopted else args.out / n for n, _ in runs}
    for name, arm_overrides in runs:
        run = where[name]
        for think in thinks:
            if not args.dry_run:
                share_base(args.out, run, think)
            if (run / result_name(think)).is_file():
                continue  # finished (or adopted): nothing to train or evaluate again
            _run(learning_cmd(run, (*arm_overrides, *overrides), args, think), args.dry_run)
            share_base(args.out, run, think)
    for think in thinks:
        finished = {arm: [where[n] for n, _ in runs if n.rpartition("-seed")[0] == arm] for arm in ARMS}
        finished = {
            arm: [d for d in dirs if (d / result_name(think)).is_file()] for arm, dirs in finished.items()
        }
        if any(finished.values()) or args.dry_run:
            _run(seeds_cmd(args.out, finished, args, think), args.dry_run)


if __name__ == "__main__":
    main()
