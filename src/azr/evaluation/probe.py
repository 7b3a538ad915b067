"""The ``probe`` benchmark: held-out self-play tasks, asked and scored exactly as in training.

The tasks ship in the package (``src/azr/data/probe.jsonl``, built by ``scripts/make_probe.py`` from base-model
proposals that the sandbox validated, none of them a training seed task). One record per line::

    {"id": "probe-induction-0003", "type": "induction", "program": "def f(...): ...",
     "inputs": ["<argument text>", ...], "outputs": ["<repr>", ...], "message": "<hint>", "visible": 4}

``visible`` is the number of induction pairs shown; the rest are the hidden tests. A ``probe*.jsonl`` file in
``--data-dir`` takes the place of the shipped one (tests use a small one). ``limit=N`` keeps the first N tasks
of each type, so a short run still covers all three.

``probe-600`` is a second, larger probe built the same way under other RNG seeds and kept apart from the first
(no program or input/output pair of one is in the other), for differences of a few points that the 150 tasks of
``probe`` cannot show (``src/azr/data/probe-600.jsonl``, or a ``probe-600*.jsonl`` in ``--data-dir``).

Prompts are the training solve prompts (:func:`azr.tasks.prompts.build_prompt`, with ``shots`` demonstrations
from ``demos.jsonl`` of the task's type) and replies go through the training parser and scorer
(:func:`azr.tasks.parsing.parse_solution`, :func:`azr.tasks.validate.score_solutions`: literal-only abduction,
hidden-pair induction). Results are reported for ``probe`` and for each ``probe/<type>`` (``probe-600`` likewise).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from azr.evaluation.demos import NO_SHOTS, Shots
from azr.evaluation.loaders import BenchmarkUnavailable, Source, read_jsonl
from azr.evaluation.spec import WRONG, Benchmark, Item, ScoreContext, Scored
from azr.types import TASK_TYPES, Role, Task, TaskType

DATA = Path(__file__).resolve().parents[1] / "data"
PROBE_FILE = DATA / "probe.jsonl"
LARGE_PROBE_FILE = DATA / "probe-600.jsonl"
PROBE_NAMES = ("probe", "probe-600")
WRONG_PROGRAM = f"def f(*args):\n    return {WRONG}"


def probe_path(data_dir: str | Path | None, name: str = "probe") -> Path:
    """``data_dir``'s ``<name>*.jsonl`` when it has one (for ``probe``, not a ``probe-600`` file), else the shipped
    file."""
    root = Path(data_dir).expanduser() if data_dir else None
    if root is not None and root.is_dir():
        hits = [
            f
            for f in sorted(root.glob(f"{name}*.jsonl*"))
            if name != "probe" or not f.name.startswith("probe-600")
        ]
        if hits:
            return hits[0]
    shipped = PROBE_FILE if name == "probe" else LARGE_PROBE_FILE
    if shipped.is_file():
        return shipped
    raise BenchmarkUnavailable(
        f"{name}: the held-out task file {shipped} is not in this install; build it with "
        f"`python scripts/make_probe.py` or put a {name}*.jsonl in --data-dir"
    )


def load_probe_rows(
    data_dir: str | Path | None, limit: int | None, name: str = "probe"
) -> list[dict[str, Any]]:
    """The probe records in file order, the first ``limit`` of each task type when ``limit`` is given."""
    path = probe_path(data_dir, name)
    rows = read_jsonl(path)
    ids = [row.get("id") for row in rows]
    if len(set(ids)) != len(ids) or None in ids:
        raise BenchmarkUnavailable(f"{name}: {path} has missing or duplicate ids")
    if limit is None:
        return rows
    taken: dict[str, int] = defaultdict(int)
    out = []
    for row in rows:
        if taken[row.get("type", "")] < limit:
            taken[row.get("type", "")] += 1
            out.append(row)
    return out


def row_task(row: dict[str, Any]) -> Task:
    """The task of one probe record (``scripts/make_probe.py`` writes them, and reads them back to extend)."""
    kind = TaskType(row["type"])
    return Task(
        kind, row["program"], tuple(row["inputs"]), tuple(row["outputs"]), row["message"], origin="imported"
    )


def _item(row: dict[str, Any], i: int) -> Item:
    kind = TaskType(row["type"])
    task = row_task(row)
    if not task.inputs or len(task.inputs) != len(task.outputs):
        raise BenchmarkUnavailable(
            f"probe: record {row['id']} needs as many outputs as inputs (at least one)"
        )
    gold = {TaskType.DEDUCTION: task.output, TaskType.ABDUCTION: task.input}.get(kind, task.program)
    return Item(str(row["id"]), gold, {"task": task, "visible": int(row["visible"])})


def _prompt(item: Item, tokenizer: Any, shots: Shots = NO_SHOTS) -> str:
    from azr.tasks.prompts import build_prompt

    task: Task = item.data["task"]
    demos, thinks = shots.solve_shots(task.type.value)
    return build_prompt(
        task.type,
        Role.SOLVE,
        tokenizer=tokenizer,
        task=task,
        n_inputs=len(task.inputs),
        n_visible=item.data["visible"],
        shots=demos,
        thinks=thinks,
    )


def _oracle(item: Item, wrong: bool) -> str:
    """The ideal training reply, or a well-formed wrong one (a literal no probe task expects, ``None`` as the
    input, a program that returns that literal)."""
    from azr.tasks.prompts import demo_reply

    task: Task = item.data["task"]
    if wrong:
        body = {TaskType.DEDUCTION: WRONG, TaskType.ABDUCTION: "None"}.get(task.type, WRONG_PROGRAM)
        task = Task(task.type, body, (body,), (body,))
    return demo_reply(task.type, Role.SOLVE, task)


def _score(ctx: ScoreContext, items: list[Item], replies: list[str]) -> list[Scored]:
    """The training scorer, one ``score_solutions`` call per (task type, visible pairs) group."""
    from azr.tasks.parsing import ParsedSolution, parse_solution
    from azr.tasks.validate import score_solutions

    groups: dict[tuple[TaskType, int], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.data["task"].type, item.data["visible"]].append(i)
    out: list[Scored | None] = [None] * len(items)
    for (kind, visible), idx in groups.items():
        parsed = [parse_solution(kind, replies[i]) for i in idx]
        tasks = [items[i].data["task"] for i in idx]
        verdicts = score_solutions(ctx.executor, kind, tasks, parsed, n_visible=visible)
        for i, p, ok in zip(idx, parsed, verdicts, strict=True):
            if isinstance(p, ParsedSolution):
                out[i] = Scored(ok, p.answer, "" if ok else "wrong")
            else:
                out[i] = Scored(False, None, f"parse: {p.reason.value}")
        if kind is TaskType.ABDUCTION:
            for i, ok in zip(idx, copy_scores(ctx.executor, tasks), strict=True):
                items[i].data["copy_scores"] = ok
    return out  # type: ignore[return-value]


def copy_scores(executor: Any, tasks: list[Task]) -> list[bool]:
    """Per abduction task: would the shown output, passed back as the input, score (the training scorer)?"""
    from azr.tasks.parsing import ParsedSolution
    from azr.tasks.validate import score_solutions

    copies = [ParsedSolution(TaskType.ABDUCTION, t.output) for t in tasks]
    return score_solutions(executor, TaskType.ABDUCTION, tasks, copies)


def probe_benchmark(name: str = "probe") -> Benchmark:
    """The registry entry of ``probe`` or ``probe-600``; 256 new tokens, the default
    ``rollout.max_new_tokens_solve``."""

    def rows(data_dir: str | Path | None, limit: int | None) -> list[dict[str, Any]]:
        return load_probe_rows(data_dir, limit, name)

    def part(item: Item) -> str:
        return f"{name}/{item.data['task'].type.value}"

    return Benchmark(
        name,
        "selfplay",
        Source((f"{name}*.jsonl*",), ""),
        _item,
        _prompt,
        _oracle,
        _score,
        max_new_tokens=256,
        stop=("</answer>",),
        demo_types=tuple(t.value for t in TASK_TYPES),
        rows=rows,
        part=part,
    )
