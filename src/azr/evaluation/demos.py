"""The fixed worked demonstrations (``shots``) that evaluation puts before each benchmark item.

They live in ``demos.jsonl`` next to this module (package data), written for this project: short deterministic
Python programs in the CRUXEval style, never benchmark items. One record per line::

    {"id": "demo-deduction-1", "type": "deduction", "program": "def f(...): ...",
     "inputs": ["<argument text>", ...], "outputs": ["<repr of the result>", ...], "message": ""}

``type`` is ``deduction`` / ``abduction`` (one input), ``induction`` (8 inputs and a hint ``message``) or ``code``
(HumanEval+/MBPP+: ``program`` is a solution whose first line is its ``def``, ``message`` the problem statement,
and the input/output pairs double as its examples). A benchmark with ``shots=K`` uses the first K records of its
type, in file order, for every item and every model, so two evaluations with the same K see the same
demonstrations; the file's sha256 goes into the results so that runs with different files are not compared.
``tests/test_eval.py`` runs every record through the sandbox, so a wrong output cannot creep in.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from azr.seams import ExecutorLike
from azr.types import Task, TaskType

DEMO_FILE = Path(__file__).with_name("demos.jsonl")
DEMO_TYPES = ("deduction", "abduction", "induction", "code")
TRACED_TYPES = ("deduction", "abduction")


class DemoError(ValueError):
    """A demonstration file that cannot be used: missing, malformed, too short, or wrong in the sandbox."""


DEMO_THINKS = ("sentence", "trace")
"""The ``<think>`` forms a demonstration can take: the default one sentence, or (``trace``, deduction and
abduction only) the sandbox's line-by-line trace of the call, the form the CPU recipe's training prompts show
(``selfplay.demo_trace``)."""


@dataclass(frozen=True)
class Demo:
    """One worked demonstration as stored in ``demos.jsonl``."""

    id: str
    type: str
    program: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    message: str = ""

    @property
    def entry(self) -> str:
        """The name of the function the program defines first (``f`` for the self-play types)."""
        match = re.match(r"def\s+(\w+)\s*\(", self.program)
        if match is None:
            raise ValueError(f"demo {self.id}: the program must start with its def line")
        return match.group(1)

    def task(self) -> Task:
        """The demonstration as a self-play task, the form the training prompts take as ``shots``."""
        return Task(TaskType(self.type), self.program, self.inputs, self.outputs, self.message, origin="seed")


@functools.cache
def load_demos(path: Path = DEMO_FILE) -> tuple[Demo, ...]:
    """All demonstrations in file order (read once per path); DemoError naming the file and line when it is
    missing or a record is malformed."""
    if not path.is_file():
        raise DemoError(f"demonstration file {path} not found")
    demos = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
                row["inputs"], row["outputs"] = tuple(row["inputs"]), tuple(row["outputs"])
                demos.append(Demo(**row))
            except (ValueError, KeyError, TypeError) as e:
                raise DemoError(
                    f"{path}:{n}: not a demonstration record ({e}); see azr.evaluation.demos"
                ) from None
    if bad := [d.id for d in demos if d.type not in DEMO_TYPES or len(d.inputs) != len(d.outputs)]:
        raise DemoError(f"{path}: malformed demonstrations {bad}")
    if len({d.id for d in demos}) != len(demos):
        raise DemoError(f"{path}: demonstration ids repeat")
    return tuple(demos)


@dataclass(frozen=True)
class Shots:
    """The demonstrations before each evaluation item: the first ``k`` of the item's type in ``file``, each with
    the ``<think>`` block ``thinks`` gives for its id (:func:`trace_thinks`), else the default sentence."""

    k: int = 0
    file: Path = DEMO_FILE
    thinks: Mapping[str, str] = field(default_factory=dict)

    def of(self, kind: str) -> list[Demo]:
        return first_demos(kind, self.k, self.file)

    def solve_shots(self, kind: str) -> tuple[list[Task], list[str | None]]:
        """The type's demonstrations as training-prompt shots, with their ``<think>`` blocks."""
        demos = self.of(kind)
        return [d.task() for d in demos], [self.thinks.get(d.id) for d in demos]


NO_SHOTS = Shots()


def first_demos(kind: str, k: int, path: Path = DEMO_FILE) -> list[Demo]:
    """The first ``k`` demonstrations of type ``kind``; DemoError when the file has fewer."""
    pool = [d for d in load_demos(path) if d.type == kind]
    if k > len(pool):
        raise DemoError(
            f"shots={k} but {path.name} has only {len(pool)} {kind} demonstrations: use {len(pool)} or fewer"
        )
    return pool[:k]


def wrong_demos(executor: ExecutorLike, demos: list[Demo]) -> list[str]:
    """Ids of the demonstrations for which the sandbox computes another output than the recorded one (or fails):
    a wrong worked example would teach the model a wrong answer (the shipped file's are right: tested)."""
    calls = [(d, i, o) for d in demos for i, o in zip(d.inputs, d.outputs, strict=True)]
    wrong: dict[str, None] = {}
    for entry in dict.fromkeys(d.entry for d in demos):
        mine = [c for c in calls if c[0].entry == entry]
        results = executor.validate_many([(d.program, i) for d, i, _ in mine], entry=entry)
        wrong |= {d.id: None for (d, _, out), r in zip(mine, results, strict=True) if r.value != out}
    return list(wrong)


def trace_thinks(executor: ExecutorLike, demos: list[Demo], max_lines: int = 12) -> dict[str, str]:
    """The trace ``<think>`` block of each deduction/abduction demonstration, by id, written by the sandbox's
    tracer exactly as the training demonstrations' are (:func:`azr.tasks.prompts.trace_think`; after ``max_lines``
    lines a trace says ``...`` and goes on to the returned value). DemoError when the sandbox writes no trace
    for one (its program fails; the file's demonstrations all trace: tested)."""
    from azr.tasks.prompts import trace_think

    todo = list({d.id: d for d in demos if d.type in TRACED_TYPES}.values())
    traces = executor.trace_many([(d.program, d.inputs[0]) for d in todo], max_lines)
    if untraced := [d.id for d, trace in zip(todo, traces, strict=True) if not trace]:
        raise DemoError(f"demonstrations {untraced} have no trace: the sandbox could not run them")
    return {
        d.id: trace_think(TaskType(d.type), d.task(), trace)
        for d, trace in zip(todo, traces, strict=True)
        if trace
    }


def demo_sha256(path: Path = DEMO_FILE) -> str:
    """The file's sha256, recorded in the results of every run that used demonstrations."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def humaneval_prompt(demo: Demo) -> str:
    """A HumanEval-style prompt for a code demonstration: its def line and a docstring with one example."""
    signature = demo.program.splitlines()[0]
    example = f">>> {demo.entry}({demo.inputs[0]})\n    {demo.outputs[0]}"
    return f'{signature}\n    """{demo.message}\n    {example}\n    """\n'


def mbpp_prompt(demo: Demo) -> str:
    """An MBPP-style prompt for a code demonstration: the statement and one example assertion."""
    return f'"""\n{demo.message}\nassert {demo.entry}({demo.inputs[0]}) == {demo.outputs[0]}\n"""\n'


def code_reply(demo: Demo) -> str:
    """The ideal reply to a code demonstration: the whole solution in one python fence."""
    return f"```python\n{demo.program}\n```"
