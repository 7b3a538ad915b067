"""``azr compare``: the exact McNemar test (hand-derived values), pairing of two eval results files by item id,
the command end to end, and its one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azr.cli import main
from azr.errors import AzrError
from azr.evaluation.compare import compare_results, mcnemar, mcnemar_p
from azr.evaluation.results import BenchResult, EvalResults, ItemRecord


def test_mcnemar_hand_derived():
    """p = min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c)):

    - b=1, c=6: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128 = 0.125
    - b=0, c=5: 2 * C(5,0) / 2^5 = 2 / 32 = 0.0625
    - b=2, c=8: 2 * (1 + 10 + 45) / 2^10 = 112 / 1024 = 0.109375
    - b=3, c=3: 2 * (1 + 6 + 15 + 20) / 64 = 84 / 64, capped at 1
    - b=c=0: no discordant pair, p = 1
    """
    assert mcnemar_p(1, 6) == 0.125
    assert mcnemar_p(0, 5) == 0.0625
    assert mcnemar_p(2, 8) == 0.109375
    assert mcnemar_p(3, 3) == 1.0
    assert mcnemar_p(0, 0) == 1.0


def test_mcnemar_counts_from_verdict_lists():
    """10 items: 2 right in both, 1 lost (index 2), 6 gained (indices 3-8), 1 wrong in both."""
    before = [True, True, True] + [False] * 7
    after = [True, True, False] + [True] * 6 + [False]
    assert mcnemar(before, after).__dict__ == {
        "n": 10, "before": 3, "after": 8, "gained": 6, "lost": 1, "p_value": 0.125,
    }  # fmt: skip
    with pytest.raises(ValueError, match="3 verdicts before but 2 after"):
        mcnemar([True] * 3, [True] * 2)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_p_is_symmetric_and_a_probability(b, c):
    p = mcnemar_p(b, c)
    assert p == mcnemar_p(c, b) and 0.0 < p <= 1.0
    if b != c:  # one more discordant pair on the larger side never makes the difference less significant
        big, small = max(b, c), min(b, c)
        assert mcnemar_p(big + 1, small) <= p
    assert math.isclose(
        mcnemar_p(b, c), min(1.0, 2 * sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))
    )


def _results(bench: str, verdicts: dict[str, bool], **meta: object) -> EvalResults:
    """Results as ``azr eval`` builds them: one record per item, one result per benchmark."""
    results = EvalResults(
        meta={"shots": 2, "demo_sha256": "abc", "samples": 1, "max_new_tokens": {bench: 96}}
    )
    results.meta.update(meta)
    shown = {"shown": "s", "copy_can_score": False} if bench.startswith("cruxeval") else {}
    for item, ok in verdicts.items():
        results.records.append(ItemRecord(bench, item, "g", ["r"], ["x"], [ok], [""], **shown))
    score = sum(verdicts.values()) / len(verdicts)
    results.results[bench] = BenchResult(bench, score, len(verdicts), 1, {1: score}, 0.0)
    return results


def _write(tmp_path: Path, name: str, results: EvalResults) -> str:
    return str(results.write_json(tmp_path / name))


def test_compare_pairs_by_id_and_reports_flips(tmp_path, capsys):
    """A: items 0-1 right; B: item 0 lost, items 2-7 gained. Records in a different order still pair by id."""
    a = _results("cruxeval-o", {f"s{i}": i < 2 for i in range(8)})
    b = _results("cruxeval-o", {f"s{i}": i != 0 for i in reversed(range(8))})
    out = tmp_path / "cmp" / "result.json"
    argv = ["compare", _write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b), "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "cruxeval-o" in printed.out and "0.125" in printed.out and printed.err == ""
    row = json.loads(out.read_text())["benches"]["cruxeval-o"]
    assert (row["n"], row["before"], row["after"], row["gained"], row["lost"]) == (8, 2, 7, 6, 1)
    assert row["p_value"] == 0.125 and row["lost_ids"] == ["s0"]
    assert row["gained_ids"] == [f"s{i}" for i in range(2, 8)] and row["dropped"] == 0


def test_a_benchmark_with_parts_pairs_the_records_of_its_parts():
    """``probe`` records are stored under ``probe/<type>``; the whole pairs all of them."""
    a, b = EvalResults(), EvalResults()
    for results, right in ((a, {"d1"}), (b, {"d1", "a1", "a2"})):
        for part, item in (("deduction", "d1"), ("abduction", "a1"), ("abduction", "a2")):
            results.records.append(
                ItemRecord(f"probe/{part}", item, "g", ["r"], ["x"], [item in right], [""])
            )
        for name in ("probe", "probe/abduction"):
            results.results[name] = BenchResult(name, 0.0, 0, 1, {1: 0.0}, 0.0)
    result = compare_results(a.to_dict(), b.to_dict())
    assert [(c.bench, c.stats.n, c.stats.gained) for c in result.benches] == [
        ("probe", 3, 2),
        ("probe/abduction", 2, 2),
    ]


def test_unpaired_items_are_dropped_with_a_warning(tmp_path, capsys):
    a = _results("mbpp+", {"m1": True, "m2": False, "m3": True})
    b = _results("mbpp+", {"m2": True, "m3": True, "m4": False}, shots=0, max_new_tokens={"mbpp+": 768})
    assert main(["compare", _write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b)]) == 0
    err = capsys.readouterr().err
    assert "mbpp+: 2 items are in only one results file and were dropped (2 paired)" in err
    assert "differ in shots (2 vs 0)" in err and "differ in max_new_tokens (96 vs 768)" in err
    result = compare_results(a.to_dict(), b.to_dict())
    assert result.benches[0].gained_ids == ["m2"] and result.benches[0].stats.n == 2


def test_demonstration_think_forms_must_agree(tmp_path, capsys):
    """A file from before ``demo_think`` existed used one-sentence demonstrations: no warning against
    ``sentence``, a warning against ``trace``; without demonstrations the form does not matter."""
    old = _results("cruxeval-o", {"c1": True})
    sentence = _results("cruxeval-o", {"c1": True}, demo_think="sentence")
    trace = _results("cruxeval-o", {"c1": True}, demo_think="trace")
    paths = [_write(tmp_path, f"{n}.json", r) for n, r in (("old", old), ("s", sentence), ("t", trace))]
    assert main(["compare", paths[0], paths[1]]) == 0
    assert "differ" not in capsys.readouterr().err
    assert main(["compare", paths[0], paths[2]]) == 0
    assert "differ in demo_think ('sentence' vs 'trace')" in capsys.readouterr().err
    no_shots = [_results("cruxeval-o", {"c1": True}, shots=0, demo_think=t) for t in ("sentence", "trace")]
    assert main(["compare", *(_write(tmp_path, f"n{i}.json", r) for i, r in enumerate(no_shots))]) == 0
    assert "differ" not in capsys.readouterr().err


def test_compare_real_eval_results_files(tmp_path, shared_data, capsys):
    """``azr eval --json`` of the gold and the wrong oracle: all 3 items lost, p = 2 / 2^3 = 0.25."""
    paths = []
    for model in ("oracle", "oracle-wrong"):
        paths.append(str(tmp_path / f"{model}.json"))
        argv = ["eval", "--model", model, "--bench", "cruxeval-o", "--limit", "3", "--shots", "2"]
        assert main([*argv, "--data-dir", str(shared_data / "benchmarks"), "--json", paths[-1]]) == 0
    capsys.readouterr()
    assert main(["compare", *paths, "--json", str(tmp_path / "cmp.json")]) == 0
    row = json.loads((tmp_path / "cmp.json").read_text())["benches"]["cruxeval-o"]
    assert (row["before"], row["after"], row["lost"], row["p_value"]) == (3, 0, 3, 0.25)
    assert row["copy"] is not None and row["copy"]["no_copy"]["n"] + row["copy"]["copy_baseline"] == 3
    assert capsys.readouterr().err == ""  # same shots, demonstrations and budget: nothing to warn about


def test_compare_errors_are_one_line(tmp_path, capsys):
    good = _write(tmp_path, "a.json", _results("cruxeval-o", {"s1": True}))
    other = _write(tmp_path, "o.json", _results("gsm8k", {"g1": True}))
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        ([good, str(tmp_path / "missing.json")], "no such file"),
        ([good, str(tmp_path / "bad.json")], "not valid JSON"),
        ([good, str(tmp_path / "list.json")], "not an eval results file"),
        ([good, other], "share no benchmark"),
    ]
    for paths, message in cases:
        assert main(["compare", *paths]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("azr compare: error:") and err.count("\n") == 1
    disjoint = _results("cruxeval-o", {"s9": True})
    with pytest.raises(AzrError, match="no benchmark has items in both results files"):
        compare_results(json.loads(Path(good).read_text()), disjoint.to_dict())


def _crux_results(bench: str, rows: list[tuple[str, str, str, bool]], with_shown: bool = True) -> dict:
    """CRUXEval results: per item (shown text, gold answer, the greedy answer, right or not)."""
    records = []
    for i, (shown, gold, answer, right) in enumerate(rows):
        rec = ItemRecord(bench, str(i), gold, [answer], [answer], [right], [""])
        d = rec.__dict__ | ({"shown": shown, "copy_can_score": shown == gold} if with_shown else {})
        if not with_shown:
            d.pop("shown"), d.pop("copy_can_score")
        records.append(d)
    n = len(rows)
    result = BenchResult(bench, sum(r[3] for r in rows) / n, n, 1, {1: 0.0}, 1.0)
    return {"results": {bench: result.__dict__}, "records": records, "meta": {}}


def test_shortcut_accounting_on_a_crafted_pair():
    """CRUXEval-O, 6 items; items 0-1 return their input (copying scores there), items 2-5 do not.

    before: answers copy the input on 0, 1, 2 (right on 0, 1; wrong on 2); 3 right; 4, 5 wrong.
    after:  answers copy the input on 0, 1, 2, 3, 4 (right on 0, 1); 5 right.
    All items: before 3 right, after 3 right. Where copying cannot score (2-5): before 1 (item 3), after 1
    (item 5); gained 1 (5), lost 1 (3), p = 1. Copies 3 -> 5, copy baseline 2.
    """
    shown = ["[1]", "'a'", "[2, 3]", "5", "'xy'", "(1, 2)"]
    gold = ["[1]", "'a'", "[3, 2]", "6", "'yx'", "3"]
    before = [("[1]", True), ("'a'", True), ("[2,3]", False), ("6", True), ("'z'", False), ("0", False)]
    after = [("[1]", True), ("'a'", True), ("[2, 3]", False), ("5", False), ("'xy'", False), ("3", True)]
    a = _crux_results("cruxeval-o", [(s, g, x, r) for s, g, (x, r) in zip(shown, gold, before, strict=True)])
    b = _crux_results("cruxeval-o", [(s, g, x, r) for s, g, (x, r) in zip(shown, gold, after, strict=True)])
    (c,) = compare_results(a, b).benches
    assert c.copy is not None
    assert (c.copy.copies_before, c.copy.copies_after, c.copy.copy_baseline) == (3, 5, 2)
    s = c.copy.no_copy
    assert (s.n, s.before, s.after, s.gained, s.lost, s.p_value) == (4, 1, 1, 1, 1, 1.0)
    table = compare_results(a, b).table()
    assert "cruxeval-o (copy cannot score)" in table and "copy the shown input: 3 -> 5 of 6" in table


def test_shortcut_accounting_needs_what_the_prompts_show(tmp_path):
    """Old results files without the shown texts: a warning, no accounting; other benchmarks never get one."""
    rows = [("1", "2", "1", False), ("3", "3", "3", True)]
    a = _crux_results("cruxeval-i", rows, with_shown=False)
    result = compare_results(a, a)
    assert result.benches[0].copy is None
    assert any("no shortcut accounting" in w and "--data-dir" in w for w in result.warnings)


def test_copying_one_argument_counts_as_a_copy():
    """``f('abc', 'd') == 'abc'``: an answer that echoes one argument is a copy, and such items are ones where
    copying can score, even in a results file that recorded only whole-input copies (``copy_can_score`` False)."""
    shown, gold = ["'abc', 'd'", "[1, 2], 0"], ["'abc'", "[2, 1]"]
    before = [("'abc', 'd'", False), ("0", False)]  # a whole-input copy and a copy of the second argument
    after = [("'abc'", True), ("[2, 1]", True)]
    rows = lambda answers: [(s, g, x, r) for s, g, (x, r) in zip(shown, gold, answers, strict=True)]  # noqa: E731
    (c,) = compare_results(
        _crux_results("cruxeval-o", rows(before)), _crux_results("cruxeval-o", rows(after))
    ).benches
    assert c.copy is not None
    assert (c.copy.copies_before, c.copy.copies_after, c.copy.copy_baseline) == (2, 1, 1)
    assert (c.copy.no_copy.n, c.copy.no_copy.before, c.copy.no_copy.after) == (1, 0, 1)
    # CRUXEval-I (a record's gold is the output): the shown output passed as one argument among others is a copy.
    crux_i = _crux_results("cruxeval-i", [("'abc'", "'abc'", "'abc', 'zz'", False), ("3", "3", "0", False)])
    (i,) = compare_results(crux_i, crux_i).benches
    assert i.copy is not None and i.copy.copies_before == 1
