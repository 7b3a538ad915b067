"""Shortcut accounting on CRUXEval: answers that copy what the prompt shows, and the items where copying cannot
score.

A CRUXEval-O prompt shows the program and its input; an answer that writes the input back as the output is right
whenever the program returns its input (69 of the 800 items). A CRUXEval-I prompt shows the output; writing it
back as the input scores wherever ``f(output) == output``. A gain made of such copies is a shortcut, not
reasoning, so :mod:`.compare` reports, for both sets, how many answers copy the shown text before and after, and
the paired test again on the items where copying cannot score:

- CRUXEval-O: the gold output differs from the input (scoring compares literals, so that is exact);
- CRUXEval-I: ``f(shown output)`` does not return the shown output, as run in the sandbox when the item was scored
  (``copy_scores``; 181 of the 800 items score by copying, only 69 of them because the gold input equals the
  output).

"Differs" and "copies" compare the texts as Python literals (``literals_equal``), falling back to the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.tasks.validate import same_literal

COPY_FIELDS = {"cruxeval-o": ("input", "output"), "cruxeval-i": ("output", "input")}
"""Per benchmark: (the field its prompt shows that an answer could copy, the field the answer stands for)."""


@dataclass(frozen=True)
class Shown:
    """What an item's prompt shows that an answer could copy, and whether copying it can score."""

    text: str
    copy_can_score: bool


def shown_for(bench: str, data: dict[str, Any]) -> Shown | None:
    """The :class:`Shown` of a CRUXEval item from its row (``input``, ``output``); None for other benchmarks."""
    fields = COPY_FIELDS.get(bench)
    if fields is None:
        return None
    shown, answer = str(data[fields[0]]), str(data[fields[1]])
    if bench == "cruxeval-i":
        if "copy_scores" not in data:
            raise KeyError(
                "copy_scores: run the copy answers in the sandbox first (copy_scores_by_execution)"
            )
        return Shown(shown, bool(data["copy_scores"]))
    return Shown(shown, same_literal(shown, answer))


def shown_from_records(records: Iterable[dict[str, Any]], bench: str) -> dict[str, Shown]:
    """``{item id: Shown}`` from a results file's records (those azr eval writes record ``shown``)."""
    out = {}
    for rec in records:
        if rec.get("bench") == bench and rec.get("shown") is not None:
            out[str(rec["id"])] = Shown(str(rec["shown"]), bool(rec.get("copy_can_score")))
    return out


def shown_from_data(bench: str, data_dir: str | Path) -> dict[str, Shown]:
    """``{item id: Shown}`` from the benchmark's own rows (for results files written before records held
    it)."""
    from azr.evaluation.benchmarks import resolve

    items = resolve([bench])[0].load(data_dir, None)
    if bench == "cruxeval-i":
        copy_scores_by_execution(items)
    out = {}
    for item in items:
        shown = shown_for(bench, item.data)
        if shown is not None:
            out[item.id] = shown
    return out


def copy_scores_by_execution(items: list[Any]) -> None:
    """Set ``copy_scores`` on CRUXEval-I items: does ``f(shown output)`` return the output? (in the sandbox)"""
    from azr.config import ExecutorConfig
    from azr.evaluation.scoring_code import score_input_predictions
    from azr.executor import Executor

    programs = [it.data["code"] for it in items]
    outputs = [it.data["output"] for it in items]
    with Executor(ExecutorConfig()) as ex:
        verdicts = score_input_predictions(ex, programs, list(outputs), outputs)
    for it, v in zip(items, verdicts, strict=True):
        it.data["copy_scores"] = v.correct


def copies(records: Iterable[dict[str, Any]], bench: str, shown: dict[str, Shown]) -> dict[str, bool]:
    """``{item id: the greedy answer copies what the prompt shows}`` over the items in ``shown``."""
    out = {}
    for rec in records:
        item = str(rec.get("id"))
        if rec.get("bench") != bench or item not in shown:
            continue
        answer = (rec.get("extracted") or [None])[0]
        out[item] = answer is not None and same_literal(str(answer), shown[item].text)
    return out
