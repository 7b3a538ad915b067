"""The HTML report: charts from metrics.jsonl, samples from the store, model text escaped, clean errors."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from azr.cli import main
from azr.errors import AzrError
from azr.metrics import expand
from azr.report import _ticks, write_report

EVIL = "<script>alert('x')</script>"


def _metrics_row(step: int) -> dict:
    row: dict = {"step": step, "time": 1_763_784_000.0 + 60 * step}
    for i, name in enumerate(expand("reward/<type>/<role>")):
        row[name] = round(-0.5 + 0.1 * i + 0.05 * step, 3)
    for name in expand("propose/valid_rate/<type>") + expand("solve/accuracy/<type>"):
        row[name] = min(1.0, 0.1 * step)
    for i, name in enumerate(expand("buffer/size/<type>")):
        row[name] = 16 + 4 * step + i
    row |= {
        "train/loss": 0.1 / step,
        "train/grad_norm": 1.5,
        "perf/seconds/step": 60.0,
        "perf/seconds/generate": 40.0,
    }
    return row


def _make_run(run_dir: Path, steps: int = 4, store: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_metrics_row(s)) for s in range(1, steps + 1)]
    lines.append(json.dumps({"step": 4, "eval/cruxeval-o": 0.25}))  # eval logged after the step's row
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "train/lo')  # torn last line
    (run_dir / "config.toml").write_text('[model]\nname = "smollm2-135m"\n\n[training]\nsteps = 10\n')
    if store:
        con = sqlite3.connect(run_dir / "tasks.sqlite")
        con.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, type TEXT, program TEXT, inputs TEXT, "
                    "outputs TEXT, message TEXT, step INTEGER, origin TEXT)")  # fmt: skip
        con.execute(
            "INSERT INTO tasks (type, program, inputs, outputs, message, step, origin) VALUES (?,?,?,?,?,?,?)",
            (
                "deduction",
                f"def f(x):\n    return '{EVIL}' + x",
                "[\"'a'\"]",
                "[\"'<b>a'\"]",
                "",
                2,
                "proposal",
            ),
        )
        # an older rollout schema without `advantage`: the report must cope
        con.execute("CREATE TABLE rollouts (step INTEGER, role TEXT, type TEXT, prompt TEXT, reply TEXT, "
                    "parse_status TEXT, reward REAL)")  # fmt: skip
        con.execute(
            "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?)",
            (3, "solve", "deduction", "What does f return?", f"<answer>{EVIL}</answer>", "ok", -0.5),
        )
        con.commit()
        con.close()
    return run_dir


def test_report_has_charts_tables_and_escaped_model_text(tmp_path):
    path = write_report(_make_run(tmp_path / "run"))
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<svg") >= 6 and "<polyline" in page
    for title in ("Mean reward per group", "Valid proposal rate", "Solve accuracy", "Buffer size", "Policy loss",
                  "Seconds per phase", "In-training evaluation"):  # fmt: skip
        assert title in page
    assert "Proposer learnability" not in page  # no data -> no empty chart
    assert "smollm2-135m" in page and "4 of 10" in page  # summary from config.toml
    assert "Last step (4)" in page and "eval/cruxeval-o" in page
    assert "&lt;script&gt;" in page and "<script" not in page  # model text never becomes markup
    assert "&lt;b&gt;a" in page and "<b>" not in page
    assert "Recent rollouts" in page and "Sample tasks" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert not list(path.parent.glob(".report.html.*"))


def test_report_without_store_or_config(tmp_path):
    run = _make_run(tmp_path / "run", store=False)
    (run / "config.toml").unlink()
    page = write_report(run).read_text()
    assert "<svg" in page and "Recent rollouts" not in page and "Config" not in page


def test_report_tolerates_a_store_with_unexpected_schema(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    con = sqlite3.connect(run / "tasks.sqlite")
    con.execute("CREATE TABLE tasks (something TEXT)")
    con.commit()
    con.close()
    page = write_report(run).read_text()  # no metrics, odd store: a report that says so
    assert "no metrics logged yet" in page


def test_empty_or_missing_run_dir_errors_cleanly(tmp_path, capsys):
    with pytest.raises(AzrError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(AzrError, match="not found"):
        write_report(tmp_path / "nope")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "azr report: error:" in err


def test_cli_prints_the_report_path(tmp_path, capsys):
    run = _make_run(tmp_path / "run", steps=2)
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")


def test_ticks_are_round_and_cover_the_range():
    assert _ticks(0.03, 0.91) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert _ticks(1, 4, 6, integer=True) == [1, 2, 3, 4]
    flat = _ticks(3, 3)  # a constant series still gets a span around its value
    assert flat[0] < 3 < flat[-1]
    ticks = _ticks(-0.47, 12.3)
    assert ticks[0] <= -0.47 and ticks[-1] >= 12.3 and len(ticks) <= 8


def test_chart_points_stay_inside_the_plot(tmp_path):
    page = write_report(_make_run(tmp_path / "run")).read_text()
    for coords in re.findall(r'points="([^"]+)"', page):
        for pair in coords.split():
            x, y = map(float, pair.split(","))
            assert 0 <= x <= 520 and 0 <= y <= 230


def test_report_reads_a_real_task_store(tmp_path):
    """The store engineer's schema (JSON inputs/outputs, WAL) renders, both while open and after close."""
    store_mod = pytest.importorskip("azr.store")
    from azr.types import Task, TaskType

    store = store_mod.TaskStore(tmp_path)
    store.add_tasks(
        [Task(TaskType.INDUCTION, "def f(x):\n    return x + 1", ("1", "2"), ("2", "3"), "add <one>")], 1
    )
    store.log_rollouts([{"step": 1, "role": "solve", "type": "induction", "prompt": "p", "reply": EVIL,
                         "parse_status": "ok", "reward": 1.0, "advantage": 0.5}])  # fmt: skip
    try:
        page = write_report(tmp_path).read_text()
    finally:
        store.close()
    assert (
        "f(1) == 2" in page
        and "add &lt;one&gt;" in page
        and "&lt;script&gt;" in page
        and "<script" not in page
    )
    assert "could not" not in write_report(tmp_path).read_text()
