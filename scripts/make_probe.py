"""Build the held-out probe (``src/azr/data/probe.jsonl``): executor-verified self-play tasks of all three types,
proposed by the *base* model in a separate seeding run, with no human data.

How it is made, so that it measures in-distribution skill without leaking into training:

- the base model (no training) proposes with the default CPU config's prompts and sampling, but under its own
  RNG seed (``--seed``, never a run's ``training.seed``), starting from the same warm-start buffers as a training
  run;
- every proposal is validated by the sandbox exactly as in training (determinism, limits); the gold answers are
  the executor's;
- a task is kept only if its program differs (after normalisation) from every program of the seed tasks a
  training run starts from (the identity triplet and the warm-start file) and from every program already kept,
  and none of its input/output pairs is one of the seed tasks' (whatever the program: ``3 -> 4`` of ``x + 1`` is
  the same example as of ``1 + x``);
- accepted tasks also join this run's own buffers, so later proposals see them as references (as seeding does).

Run it from the repository root (about 15-25 minutes on 2 cores)::

    .venv/bin/python scripts/make_probe.py --per-type 100 --out src/azr/data/probe.jsonl

The larger ``probe-600`` is built the same way under another seed, and kept apart from the first probe (its
programs and input/output pairs are banned like the seed tasks')::

    .venv/bin/python scripts/make_probe.py --name probe-600 --per-type 200 --seed 104729 --minutes 150 \
        --exclude src/azr/data/probe.jsonl --out src/azr/data/probe-600.jsonl
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import re
import tempfile
import time
from pathlib import Path

from rich.console import Console

from azr.config import DEFAULT_RECIPE, load
from azr.evaluation.probe import row_task
from azr.fsutil import atomic_write_text
from azr.loop import build
from azr.selfplay.seeding import seed_buffers
from azr.tasks.seed_tasks import resolve_seed_tasks_file
from azr.types import TASK_TYPES, Task, TaskType

CONFIG = str(DEFAULT_RECIPE)
BUILTINS = set(dir(builtins))


def normalise(program: str) -> str:
    """A canonical form of a program: its AST with every non-builtin name replaced by its order of first use, so
    neither formatting nor renamed variables make a new task (``def f(nums)`` and ``def f(numbers)`` match)."""
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return re.sub(r"\s+", " ", program).strip()
    names: dict[str, str] = {}

    def rename(name: str) -> str:
        if name in BUILTINS or name == "f":
            return name
        return names.setdefault(name, f"v{len(names)}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = rename(node.id)
        elif isinstance(node, ast.arg):
            node.arg = rename(node.arg)
        elif isinstance(node, ast.FunctionDef) and node.name != "f":
            node.name = rename(node.name)
    return ast.dump(tree, annotate_fields=False)


def seed_task_programs(seed_tasks_file: str) -> set[str]:
    """Normalised programs of every task a default training run starts from, and (as keys, see
    :func:`pair_keys`) their input/output examples."""
    rows = [{"snippet": "def f(a):\n    return a", "input": "'Hello world'", "output": "'Hello world'"}]
    for line in resolve_seed_tasks_file(seed_tasks_file).read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    banned = {normalise(r["snippet"]) for r in rows}
    for r in rows:  # deduction/abduction rows hold one example, induction rows lists of them
        ins = [r["input"]] if "input" in r else list(r["inputs"])
        outs = [r["output"]] if "output" in r else list(r["outputs"])
        banned |= pair_keys(ins, outs)
    return banned


def pair_keys(inputs: list[str], outputs: list[str]) -> set[str]:
    """``input NUL output`` per example (texts without spaces): the keys by which an example is recognised."""
    return {"\0".join(re.sub(r"\s+", "", x) for x in pair) for pair in zip(inputs, outputs, strict=True)}


def record(task: Task, index: int, visible: int, name: str = "probe") -> dict[str, object]:
    kind = TaskType(task.type)
    return {
        "id": f"{name}-{kind.value}-{index:04d}",
        "type": kind.value,
        "program": task.program,
        "inputs": list(task.inputs),
        "outputs": list(task.outputs),
        "message": task.message,
        "visible": visible if kind is TaskType.INDUCTION else 0,
    }


def load_records(path: Path) -> list[Task]:
    """The tasks of an existing probe file (``--extend`` adds to them under a new RNG seed)."""
    return [row_task(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-type", type=int, default=100, help="Tasks to keep per task type.")
    ap.add_argument("--seed", type=int, default=7919, help="Sampling seed of this run (not a training.seed).")
    ap.add_argument("--batch", type=int, default=16, help="Proposals per type per round.")
    ap.add_argument("--minutes", type=float, default=30.0, help="Stop after this much wall time.")
    ap.add_argument("--out", default="src/azr/data/probe.jsonl")
    ap.add_argument("--extend", action="store_true", help="Keep the tasks already in --out and add to them.")
    ap.add_argument("--filter-only", action="store_true", help="Only re-apply the dedup rules to --out.")
    ap.add_argument("--name", default="probe", help="The benchmark the file is for: the ids' prefix.")
    ap.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="A probe file whose programs and input/output pairs the new tasks must not share (repeatable).",
    )
    args = ap.parse_args()

    cfg = load(CONFIG, [f"training.seed={args.seed}", "logging.progress=false"])
    banned = seed_task_programs(cfg.selfplay.seed_tasks_file)
    for path in args.exclude:
        banned |= task_keys(load_records(Path(path)))
    if args.filter_only:
        tasks = deduplicate(load_records(Path(args.out)), banned)
        return write(Path(args.out), tasks, cfg.selfplay.induction_visible, Console(), args.name)
    console = Console()
    kept: dict[TaskType, list[Task]] = {k: [] for k in TASK_TYPES}
    seen: set[str] = set()
    if args.extend and Path(args.out).is_file():
        for task in load_records(Path(args.out)):
            kept[TaskType(task.type)].append(task)
            seen.add(_key(task))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="azr-probe-") as tmp:
        run = build(cfg, Path(tmp), console)
        try:
            seed_buffers(run.selfplay)
            rounds = 0
            while time.perf_counter() - t0 < args.minutes * 60:
                want = {k: args.batch for k in TASK_TYPES if len(kept[k]) < args.per_type}
                if not want:
                    break
                rounds += 1
                timings: dict[str, float] = {}
                proposals = run.selfplay.propose(10_000 + rounds, timings, None, counts=want)
                accepted = run.selfplay.validate(proposals, rounds, timings)
                run.store.add_tasks(accepted, rounds)
                for task in deduplicate(accepted, banned, seen):
                    if len(kept[TaskType(task.type)]) < args.per_type:
                        kept[TaskType(task.type)].append(task)
                        seen.add(_key(task))
                counts = ", ".join(f"{k.value} {len(v)}" for k, v in kept.items())
                console.print(
                    f"round {rounds}: {len(accepted)}/{len(proposals)} valid; kept {counts} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
        finally:
            run.executor.close()
            run.store.close()
    tasks = deduplicate([t for k in TASK_TYPES for t in kept[k]], banned)
    console.print(f"{time.perf_counter() - t0:.0f} s")
    return write(Path(args.out), tasks, cfg.selfplay.induction_visible, console, args.name)


def task_keys(tasks: list[Task]) -> set[str]:
    """The banned keys of existing tasks: their normalised programs and their input/output examples."""
    keys = {normalise(t.program) for t in tasks}
    for t in tasks:
        keys |= pair_keys(list(t.inputs), list(t.outputs))
    return keys


def _key(task: Task) -> str:
    prefix = "induction:" if TaskType(task.type) is TaskType.INDUCTION else ""
    return prefix + normalise(task.program)


def deduplicate(tasks: list[Task], banned: set[str], seen: set[str] | None = None) -> list[Task]:
    """Tasks in order, without those whose program is a training seed's or an earlier task's (an induction task
    only clashes with another induction task: it reuses a buffer program by design). ``seen``: keys already
    kept."""
    seen = set(seen or ())
    out = []
    for task in tasks:
        key = _key(task)
        if (
            normalise(task.program) in banned
            or key in seen
            or pair_keys(list(task.inputs), list(task.outputs)) & banned
        ):
            continue
        seen.add(key)
        out.append(task)
    return out


def write(out: Path, tasks: list[Task], visible: int, console: Console, name: str = "probe") -> int:
    lines = []
    for kind in TASK_TYPES:
        mine = [t for t in tasks if TaskType(t.type) is kind]
        lines += [json.dumps(record(t, i, visible, name)) for i, t in enumerate(mine, 1)]
    atomic_write_text(out, "\n".join(lines) + "\n")
    console.print(f"wrote {len(lines)} tasks to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
