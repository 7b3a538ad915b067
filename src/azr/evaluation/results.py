"""What an evaluation produces (its results, written as the results JSON file; the HTML run report is
:mod:`azr.report`): per-item records, per-benchmark scores, a console table, JSON and metrics."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from azr.fsutil import atomic_write_text


@dataclass(frozen=True)
class ItemRecord:
    """One benchmark item: its replies (one per sample), what was read from each, and the verdicts."""

    bench: str
    id: str
    gold: str
    replies: list[str]
    extracted: list[str | None]
    correct: list[bool]
    details: list[str]
    shown: str | None = (
        None  # CRUXEval: what the prompt shows that an answer could copy (evaluation.shortcut)
    )
    copy_can_score: bool | None = None  # ... and whether copying it would be right


@dataclass(frozen=True)
class BenchResult:
    """``score`` is greedy/mean pass@1 over items; ``pass_at`` maps k to the unbiased pass@k. A benchmark with
    parts (``probe``) has one result for the whole and one per part (``probe/deduction``, ...); the item
    records carry the part's name as ``bench``."""

    bench: str
    score: float
    n_items: int
    n_samples: int
    pass_at: dict[int, float]
    seconds: float


@dataclass
class EvalResults:
    """One evaluation's results: per-benchmark scores, skipped benchmarks with their reason, per-item records and
    the settings that make two runs comparable (``meta``)."""

    results: dict[str, BenchResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    records: list[ItemRecord] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float | int]]:
        """``{bench: {"score": pass@1, "n": items}}`` for every benchmark that ran."""
        return {b: {"score": r.score, "n": r.n_items} for b, r in self.results.items()}

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat metrics for the training log: ``eval/<bench>`` = pass@1 (and ``eval/<bench>/pass@k``)."""
        out = {}
        for b, r in self.results.items():
            out[f"{prefix}{b}"] = r.score
            out.update({f"{prefix}{b}/pass@{k}": v for k, v in r.pass_at.items() if k > 1})
        return out

    def table(self) -> str:
        """A plain-text table: one line per benchmark, skipped ones with their reason."""
        ks = sorted({k for r in self.results.values() for k in r.pass_at if k > 1})
        head = ["benchmark", "pass@1", *[f"pass@{k}" for k in ks], "items", "seconds"]
        rows = [
            [b, f"{100 * r.score:.1f}", *[f"{100 * r.pass_at.get(k, 0.0):.1f}" for k in ks], str(r.n_items),
             f"{r.seconds:.1f}"]
            for b, r in self.results.items()
        ]  # fmt: skip
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *rows]]
        lines += [f"{b}: skipped ({why})" for b, why in self.skipped.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "results": {b: asdict(r) for b, r in self.results.items()},
            "skipped": self.skipped,
            "meta": self.meta,
            "records": [asdict(r) for r in self.records],
        }

    def write_json(self, path: str | Path) -> Path:
        """Write the whole results file (summary, results, skipped, meta, per-item records) as JSON, atomically:
        a reader (``azr compare``, a dashboard) sees the old file or the complete new one."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
