"""Paired comparison of two evaluation results files: which items flipped, and whether the flips are more than
chance.

Two runs on the same items are paired by item id (greedy verdict: the first sample, ``correct[0]``). Only the
discordant pairs carry information: ``b`` items wrong before and right after (gained), ``c`` right before and
wrong after (lost). Under the null hypothesis "no difference" each discordant item is a fair coin, so the
exact two-sided McNemar test is a binomial test on ``b + c`` flips::

    p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2 ** (b + c))        (p = 1 when b + c = 0)

Worked example: 6 gained and 1 lost give ``2 * (C(7, 0) + C(7, 1)) / 2**7 = 2 * 8 / 128 = 0.125``: not
significant at 0.05, although the score rose by 5 items. :func:`mcnemar` is pure and reusable (``bench/``
scripts import it); :func:`compare_results` works on the dicts ``azr eval --json`` writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from azr.errors import AzrError
from azr.evaluation.probe import PROBE_NAMES
from azr.evaluation.shortcut import COPY_FIELDS, Shown, copies, shown_from_data, shown_from_records

META_KEYS = ("shots", "demo_sha256", "demo_think", "samples")
"""Settings that must agree for two runs to be comparable (the token budget is checked per benchmark)."""
META_DEFAULTS = {"demo_think": "sentence"}  # what files written before the key existed used
SHOT_KEYS = ("demo_sha256", "demo_think")  # meaningless without demonstrations


@dataclass(frozen=True)
class McNemar:
    """Paired counts over ``n`` items and the exact two-sided McNemar p-value."""

    n: int
    before: int  # items right in the first run
    after: int  # items right in the second run
    gained: int  # wrong before, right after (b)
    lost: int  # right before, wrong after (c)
    p_value: float


def mcnemar_p(gained: int, lost: int) -> float:
    """The exact two-sided McNemar p-value of ``gained`` against ``lost`` discordant pairs."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(gained, lost) + 1))
    return min(1.0, 2 * tail / 2**n)  # int / int: exact enough even for thousands of pairs


def mcnemar(before: Sequence[bool], after: Sequence[bool]) -> McNemar:
    """Counts and p-value for two aligned verdict lists (``before[i]`` and ``after[i]`` judge the same item)."""
    if len(before) != len(after):
        raise ValueError(f"{len(before)} verdicts before but {len(after)} after")
    gained = sum(1 for a, b in zip(before, after, strict=True) if b and not a)
    lost = sum(1 for a, b in zip(before, after, strict=True) if a and not b)
    return McNemar(
        len(before), sum(map(bool, before)), sum(map(bool, after)), gained, lost, mcnemar_p(gained, lost)
    )


@dataclass(frozen=True)
class CopyStats:
    """Shortcut accounting of one CRUXEval set (:mod:`azr.evaluation.shortcut`) over the paired items: answers
    that copy what the prompt shows, before and after; the items where copying scores (the copy baseline); and
    the paired test on the other items, where copying cannot score."""

    copies_before: int
    copies_after: int
    copy_baseline: int
    no_copy: McNemar


@dataclass(frozen=True)
class BenchComparison:
    """One benchmark of both runs: the paired test, the flipped ids, how many unpaired items were dropped, and
    for CRUXEval the shortcut accounting."""

    bench: str
    stats: McNemar
    gained_ids: list[str]
    lost_ids: list[str]
    dropped: int = 0
    copy: CopyStats | None = None


@dataclass
class Comparison:
    """Every benchmark the two runs share, and warnings about what makes them less comparable."""

    benches: list[BenchComparison] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self, max_ids: int = 10) -> str:
        """A plain-text table (one line per benchmark) and the first ``max_ids`` flipped ids of each."""
        head = ["benchmark", "n", "before", "after", "gained", "lost", "p"]
        rows = [
            [c.bench, str(s.n), _pct(s.before, s.n), _pct(s.after, s.n), str(s.gained), str(s.lost),
             f"{s.p_value:.4g}"]
            for c in self.benches
            for s in [c.stats]
        ]  # fmt: skip
        for c in self.benches:
            if c.copy:
                s = c.copy.no_copy
                rows.append([f"{c.bench} (copy cannot score)", str(s.n), _pct(s.before, s.n), _pct(s.after, s.n),
                             str(s.gained), str(s.lost), f"{s.p_value:.4g}"])  # fmt: skip
        widths = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [head, *rows]
        ]
        for c in self.benches:
            if c.copy:
                what = COPY_FIELDS[c.bench][0]
                lines.append(
                    f"{c.bench}: answers that copy the shown {what}: {c.copy.copies_before} -> "
                    f"{c.copy.copies_after} of {c.stats.n}; copying the {what} scores on {c.copy.copy_baseline}"
                )
        for c in self.benches:
            for word, ids in (("gained", c.gained_ids), ("lost", c.lost_ids)):
                if ids:
                    more = f" ... (+{len(ids) - max_ids})" if len(ids) > max_ids else ""
                    lines.append(f"{c.bench} {word}: {', '.join(ids[:max_ids])}{more}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        benches = {
            c.bench: {
                **asdict(c.stats),
                "gained_ids": c.gained_ids,
                "lost_ids": c.lost_ids,
                "dropped": c.dropped,
                "copy": asdict(c.copy) if c.copy else None,
            }
            for c in self.benches
        }
        return {"benches": benches, "warnings": self.warnings}


def _pct(k: int, n: int) -> str:
    return f"{k} ({100 * k / n:.1f}%)" if n else "0"


def load_results(path: str | Path) -> dict[str, Any]:
    """An ``azr eval --json`` results file; AzrError (saying what to do) when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise AzrError(f"{path}: no such file (write one with `azr eval --json {path}`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AzrError(f"{path}: not valid JSON ({e}); pass a file written by `azr eval --json`") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise AzrError(
            f"{path}: not an eval results file (no 'records' list); pass a file written by `azr eval --json`"
        )
    return data


def greedy_verdicts(results: dict[str, Any], bench: str) -> dict[str, bool]:
    """``{item id: correct[0]}`` for a benchmark's items, its parts' items included (``probe`` pairs the
    records of ``probe/deduction``, ...)."""
    out: dict[str, bool] = {}
    for rec in results["records"]:
        name = rec.get("bench", "")
        if name != bench and not name.startswith(bench + "/"):
            continue
        item = str(rec["id"])
        if item in out:
            raise AzrError(
                f"benchmark {bench}: item id {item!r} occurs twice in one results file; re-run `azr eval`"
            )
        out[item] = bool(rec.get("correct") and rec["correct"][0])
    return out


def _benches(results: dict[str, Any]) -> list[str]:
    """The benchmarks a results file scored: its ``results``, else the names in its records."""
    names = list(results.get("results") or {})
    return names or list(dict.fromkeys(str(r.get("bench", "")) for r in results["records"]))


def compare_bench(
    a: dict[str, Any], b: dict[str, Any], bench: str, shown: dict[str, Shown] | None = None
) -> BenchComparison | None:
    """One benchmark, paired over the items both results files hold (None when they share none). With ``shown``
    (a CRUXEval set's :class:`Shown` per item) it adds the shortcut accounting."""
    va, vb = greedy_verdicts(a, bench), greedy_verdicts(b, bench)
    common = [i for i in va if i in vb]
    if not common:
        return None
    stats = mcnemar([va[i] for i in common], [vb[i] for i in common])
    gained = [i for i in common if vb[i] and not va[i]]
    lost = [i for i in common if va[i] and not vb[i]]
    copy = _copy_stats(a, b, bench, common, va, vb, shown) if shown else None
    return BenchComparison(bench, stats, gained, lost, len(va) + len(vb) - 2 * len(common), copy)


def _copy_stats(
    a: dict[str, Any],
    b: dict[str, Any],
    bench: str,
    common: list[str],
    va: dict[str, bool],
    vb: dict[str, bool],
    shown: dict[str, Shown],
) -> CopyStats | None:
    items = [i for i in common if i in shown]
    if len(items) < len(common):
        return None
    ca, cb = copies(a["records"], bench, shown), copies(b["records"], bench, shown)
    rest = [i for i in items if not shown[i].copy_can_score]
    return CopyStats(
        sum(ca.get(i, False) for i in items),
        sum(cb.get(i, False) for i in items),
        len(items) - len(rest),
        mcnemar([va[i] for i in rest], [vb[i] for i in rest]),
    )


def shown_items(
    a: dict[str, Any], b: dict[str, Any], bench: str, data_dir: str | Path | None
) -> dict[str, Shown] | None:
    """What the prompts of a CRUXEval set or probe part show, from the data in ``data_dir`` when given (the
    benchmark's own rows are the authority; the probe ships with azr), else from the results files' records; None
    for other benchmarks or when neither has it."""
    if bench not in COPY_FIELDS:
        return None
    from_data = data_dir or bench.split("/")[0] in PROBE_NAMES  # the probes ship with azr
    found = shown_from_data(bench, data_dir) if from_data else {}
    found = found or shown_from_records(b["records"], bench) or shown_from_records(a["records"], bench)
    return found or None


def meta_warnings(a: dict[str, Any], b: dict[str, Any], benches: Sequence[str]) -> list[str]:
    """Settings in which the two runs differ, each making the comparison less meaningful."""
    ma, mb = a.get("meta") or {}, b.get("meta") or {}
    ma, mb = {**META_DEFAULTS, **ma}, {**META_DEFAULTS, **mb}
    out = [
        f"the runs differ in {key} ({ma.get(key)!r} vs {mb.get(key)!r}): the scores are not comparable"
        for key in META_KEYS
        if ma.get(key) != mb.get(key)
        and not (key in SHOT_KEYS and not ma.get("shots") and not mb.get("shots"))
    ]
    ta, tb = ma.get("max_new_tokens") or {}, mb.get("max_new_tokens") or {}
    for bench in dict.fromkeys(name.split("/")[0] for name in benches):
        if ta.get(bench) != tb.get(bench):
            out.append(f"{bench}: the runs differ in max_new_tokens ({ta.get(bench)} vs {tb.get(bench)})")
    return out


def compare_results(a: dict[str, Any], b: dict[str, Any], data_dir: str | Path | None = None) -> Comparison:
    """Every benchmark both results files scored, in the first one's order; AzrError when they share none. For
    CRUXEval the shortcut accounting too; ``data_dir`` supplies the items' inputs and outputs for results files
    written before their records held them."""
    shared = [name for name in _benches(a) if name in set(_benches(b))]
    if not shared:
        raise AzrError(
            f"the results files share no benchmark ({', '.join(_benches(a)) or 'none'} vs "
            f"{', '.join(_benches(b)) or 'none'}); run `azr eval` on the same --bench"
        )
    result = Comparison(warnings=meta_warnings(a, b, shared))
    for name in shared:
        shown = shown_items(a, b, name, data_dir)
        if name in COPY_FIELDS and shown is None:
            result.warnings.append(
                f"{name}: no shortcut accounting (the results files do not record what the prompts show); "
                "pass --data-dir"
            )
        comparison = compare_bench(a, b, name, shown)
        if comparison is None:
            result.warnings.append(f"{name}: the results files have no item id in common; skipped")
            continue
        if comparison.dropped:
            result.warnings.append(
                f"{name}: {comparison.dropped} items are in only one results file and were dropped "
                f"({comparison.stats.n} paired)"
            )
        result.benches.append(comparison)
    if not result.benches:
        raise AzrError(
            "no benchmark has items in both results files; run `azr eval` on the same data and --limit"
        )
    return result
