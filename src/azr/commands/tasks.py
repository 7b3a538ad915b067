"""``azr tasks``: inspect and fill a run's task store (``RUN_DIR/tasks.sqlite``).

azr tasks counts RUN_DIR_OR_DB
azr tasks show ID --db RUN_DIR_OR_DB
azr tasks sample --type deduction -n 3 --db RUN_DIR_OR_DB [--seed 0] [--recency]
azr tasks export --out FILE.jsonl --db RUN_DIR_OR_DB [--type induction]
azr tasks import SEED_TASKS.jsonl --db RUN_DIR_OR_DB [--config RUN.toml] [--step 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azr.store import TaskStore
    from azr.types import Task

HELP = "Inspect a run's task store: counts, samples, export."

_TYPES = ("deduction", "abduction", "induction")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tasks_command", metavar="ACTION", required=True)
    db_help = "run directory (holding tasks.sqlite) or database file"
    counts = sub.add_parser("counts", help="Tasks per type and the newest step.")
    counts.add_argument("target", nargs="?", help=db_help)
    counts.add_argument("--db", help=db_help)
    show = sub.add_parser("show", help="Print one task.")
    show.add_argument("id", type=int)
    show.add_argument("--db", required=True, help=db_help)
    sample = sub.add_parser("sample", help="Print tasks drawn as references would be.")
    sample.add_argument("--type", choices=_TYPES, default="deduction")
    sample.add_argument("-n", type=int, default=3)
    sample.add_argument("--seed", type=int, default=0, help="RNG seed (sampling is deterministic given it)")
    sample.add_argument("--recency", action="store_true", help="recency-weighted instead of uniform")
    sample.add_argument("--db", required=True, help=db_help)
    export = sub.add_parser("export", help="Write tasks as JSON lines.")
    export.add_argument("--out", required=True, help="output .jsonl file")
    export.add_argument("--type", choices=_TYPES)
    export.add_argument(
        "--format",
        choices=("azr", "reference"),
        default="azr",
        help="reference = the seed tasks JSONL format",
    )
    export.add_argument("--db", required=True, help=db_help)
    imp = sub.add_parser(
        "import", help="Validate a seed tasks JSONL (reference format) and add the valid rows."
    )
    imp.add_argument("seed_tasks_file", help="*_seed_io.jsonl or *_code_f_seed_io.jsonl")
    imp.add_argument("--db", required=True, help=db_help + " (created if missing)")
    imp.add_argument("--config", help="TOML run file (executor limits, selfplay.induction_min_valid)")
    imp.add_argument("--step", type=int, default=0, help="step recorded on the imported tasks")


def run(args: argparse.Namespace) -> int:
    action = args.tasks_command
    if action == "import":
        return _import(args)
    store = _open(args.target or args.db if action == "counts" else args.db)
    with store:
        if action == "counts":
            return _counts(store)
        if action == "show":
            return _show(store, args.id)
        if action == "sample":
            return _sample(store, args.type, args.n, args.seed, args.recency)
        n = store.export_jsonl(args.out, type=args.type, fmt=args.format)
        print(f"wrote {n} tasks to {args.out}")
        return 0


def _open(target: str | None) -> TaskStore:
    from azr.errors import AzrError
    from azr.store import TaskStore, store_path

    if not target:
        raise AzrError("give a run directory or database: `azr tasks counts RUN_DIR` or --db RUN_DIR")
    path = store_path(target)
    if not path.is_file():
        raise AzrError(f"no task store at {path}: give a run directory holding tasks.sqlite, or the file")
    return TaskStore(path)


def _counts(store: TaskStore) -> int:
    counts = store.counts()
    width = max(len(k) for k in counts)
    for kind, n in counts.items():
        print(f"{kind:<{width}}  {n}")
    print(f"{'total':<{width}}  {sum(counts.values())}")
    print(f"{'max step':<{width}}  {store.max_step()}")
    return 0


def _format(task: Task) -> str:
    stats = task.extra
    head = (
        f"#{task.id} {task.type.value}  step {task.step}  origin {task.origin}  "
        f"solved {stats.get('n_solved', 0)}/{stats.get('n_solve_attempts', 0)}"
    )
    lines = [head, task.program]
    lines += [f"  f({i}) == {o}" for i, o in zip(task.inputs, task.outputs, strict=True)]
    if task.message:
        lines.append(f"  message: {task.message}")
    return "\n".join(lines)


def _show(store: TaskStore, task_id: int) -> int:
    from azr.errors import AzrError

    task = store.get(task_id)
    if task is None:
        raise AzrError(f"no task with id {task_id} (see `azr tasks counts`)")
    print(_format(task))
    return 0


def _sample(store: TaskStore, kind: str, n: int, seed: int, recency: bool) -> int:
    import random

    tasks = store.sample_references(kind, n, random.Random(seed), recency=recency)
    if not tasks:
        print(f"no {kind} tasks in the store")
    print("\n\n".join(_format(t) for t in tasks))
    return 0


def _import(args: argparse.Namespace) -> int:
    from azr import config as C
    from azr.executor import Executor
    from azr.store import TaskStore
    from azr.tasks.seed_tasks import import_seed_tasks

    cfg = C.load(args.config)
    with Executor(cfg.executor) as ex, TaskStore(args.db) as store:
        report = import_seed_tasks(
            ex, store, Path(args.seed_tasks_file), cfg, step=args.step, progress=_progress()
        )
        print()
        print(f"{args.seed_tasks_file}: {report.summary()}")
        print("buffers: " + ", ".join(f"{k} {v}" for k, v in store.counts().items()))
    return 0


def _progress() -> Callable[[int, int], None]:
    import sys

    def show(done: int, total: int) -> None:
        print(f"\rvalidating {done}/{total}", end="", file=sys.stderr, flush=True)

    return show
