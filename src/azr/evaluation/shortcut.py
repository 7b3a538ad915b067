"""Shortcut accounting on CRUXEval: answers that copy what the prompt shows, and the items where copying cannot
score.

A CRUXEval-O prompt shows the program and its input; an answer that writes the input back as the output, or one
of its arguments (``f('abc', 'd')`` returning ``'abc'``), is right whenever the program returns it: 153 of the 800
items (69 of them return the whole input). A CRUXEval-I prompt shows the output; an answer that passes the output
back as the input, or as one of the arguments, scores wherever ``f(output) == output`` or the gold input holds the
output as an argument: 266 of the 800 items. A gain made of such copies is a shortcut, not reasoning, so
:mod:`.compare` reports, for both sets, how many answers copy the shown text before and after, and the paired
test again on the items where copying cannot score:

- CRUXEval-O: the gold output is neither the input nor one of its arguments (scoring compares literals, so that
  is exact);
- CRUXEval-I: ``f(shown output)`` does not return the shown output, as run in the sandbox when the item was scored
  (``copy_scores``), and no argument of the gold input is the output. (An answer with the output as one argument
  and other arguments of its own could still score on an item left in; the gold input is the one such case the
  accounting can see.)

The probes' deduction and abduction parts (``probe/deduction``, ``probe-600/abduction``, ...) get the same
accounting, with the same rules applied to each task's input and output (``copy_scores`` from the sandbox's
abduction check of the output passed back as the input, when the item was scored).

"Copies" and "echoes" compare texts as Python literals (``literals_equal``), falling back to the text
(:func:`azr.tasks.validate.echoes_input`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.evaluation.probe import PROBE_NAMES, copy_scores
from azr.tasks.validate import echoes_input

COPY_FIELDS = {
    "cruxeval-o": ("input", "output"),
    "cruxeval-i": ("output", "input"),
    **{f"{p}/deduction": ("input", "output") for p in PROBE_NAMES},
    **{f"{p}/abduction": ("output", "input") for p in PROBE_NAMES},
}
"""Per benchmark: (the field its prompt shows that an answer could copy, the field the answer stands for)."""
SHOWS_OUTPUT = ("cruxeval-i", *(f"{p}/abduction" for p in PROBE_NAMES))  # the answer is an input


@dataclass(frozen=True)
class Shown:
    """What an item's prompt shows that an answer could copy, and whether copying it can score."""

    text: str
    copy_can_score: bool


def shown_for(bench: str, data: dict[str, Any]) -> Shown | None:
    """The :class:`Shown` of a CRUXEval item from its row (``input``, ``output``), or of a probe deduction or
    abduction item from its task; None for other benchmarks."""
    fields = COPY_FIELDS.get(bench)
    if fields is None:
        return None
    row = data
    if "task" in data:  # a probe item
        row = {"input": data["task"].input, "output": data["task"].output, **data}
    shown, answer = str(row[fields[0]]), str(row[fields[1]])
    if bench in SHOWS_OUTPUT:
        if "copy_scores" not in data:
            raise KeyError(
                "copy_scores: run the copy answers in the sandbox first (copy_scores_by_execution)"
            )
        return Shown(shown, bool(data["copy_scores"]) or echoes_input(answer, shown))
    return Shown(shown, echoes_input(shown, answer))


def shown_from_records(records: Iterable[dict[str, Any]], bench: str) -> dict[str, Shown]:
    """``{item id: Shown}`` from a results file's records (those azr eval writes record ``shown``)."""
    out = {}
    for rec in records:
        if rec.get("bench") == bench and rec.get("shown") is not None:
            shown, gold = str(rec["shown"]), str(rec.get("gold", ""))
            # Files written before argument echoes counted recorded whole-input copies only: CRUXEval-O's record
            # holds the gold output, so add them here (CRUXEval-I's holds no gold input: use --data-dir).
            echo = bench == "cruxeval-o" and echoes_input(shown, gold)
            out[str(rec["id"])] = Shown(shown, bool(rec.get("copy_can_score")) or echo)
    return out


@functools.lru_cache(maxsize=8)  # bench/seeds.py asks once per run: load and execute once
def shown_from_data(bench: str, data_dir: str | Path | None) -> dict[str, Shown]:
    """``{item id: Shown}`` from the benchmark's own rows (for results files written before records held it); a
    probe part reads the probe (``data_dir``'s, else the shipped one)."""
    from azr.evaluation.benchmarks import resolve

    spec = resolve([bench.split("/")[0]])[0]
    items = [it for it in spec.load(data_dir, None) if spec.part is None or spec.part(it) == bench]
    if bench == "cruxeval-i":
        copy_scores_by_execution(items)
    elif bench in SHOWS_OUTPUT:
        _probe_copy_scores(items)
    out = {}
    for item in items:
        shown = shown_for(bench, item.data)
        if shown is not None:
            out[item.id] = shown
    return out


def copy_scores_by_execution(items: list[Any]) -> None:
    """Set ``copy_scores`` on CRUXEval-I items: does ``f(shown output)`` return the output? (in the sandbox)"""
    from azr.config import ExecutorConfig
    from azr.evaluation.benchmarks import set_copy_scores
    from azr.executor import Executor

    with Executor(ExecutorConfig()) as ex:
        set_copy_scores(ex, items)


def _probe_copy_scores(items: list[Any]) -> None:
    """Set ``copy_scores`` on probe abduction items (:func:`azr.evaluation.probe.copy_scores`, in the sandbox)."""
    from azr.config import ExecutorConfig
    from azr.executor import Executor

    with Executor(ExecutorConfig()) as ex:
        verdicts = copy_scores(ex, [it.data["task"] for it in items])
    for it, ok in zip(items, verdicts, strict=True):
        it.data["copy_scores"] = ok


def copies(records: Iterable[dict[str, Any]], bench: str, shown: dict[str, Shown]) -> dict[str, bool]:
    """``{item id: the greedy answer copies what the prompt shows}`` over the items in ``shown``."""
    out = {}
    for rec in records:
        item = str(rec.get("id"))
        if rec.get("bench") != bench or item not in shown:
            continue
        answer = (rec.get("extracted") or [None])[0]
        out[item] = answer is not None and _copies(bench, str(answer), shown[item].text)
    return out


def _copies(bench: str, answer: str, shown: str) -> bool:
    """Output prediction (CRUXEval-O, probe deduction): the answer echoes the shown input (whole, or one
    argument); input prediction: the answer's arguments are the shown output, or one of them is."""
    return echoes_input(answer, shown) if bench in SHOWS_OUTPUT else echoes_input(shown, answer)
