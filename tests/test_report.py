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
from azr.report.charts import ticks as _ticks
from azr.report.run import write_report

EVIL = "<script>alert('x')</script>"


def embedded(page: str) -> dict:
    """The browser's data block, parsed as the page's script parses it."""
    m = re.search(r'<script type="application/json" id="azr-data">(.*?)</script>', page, flags=re.S)
    return json.loads(m.group(1))


def assert_inert(page: str) -> None:
    """Model text never becomes markup: the only script elements are the report's own two, and the data block
    holds no raw <, > or &."""
    assert page.count("<script") == 2 and page.count("</script>") == 2
    m = re.search(r'<script type="application/json" id="azr-data">(.*?)</script>', page, flags=re.S)
    assert not set("<>&\u2028\u2029") & set(m.group(1))
    assert "<img" not in page and "<svg onload" not in page


def _metrics_row(step: int) -> dict:
    row: dict = {"step": step, "time": 1_763_784_000.0 + 60 * step}
    for i, name in enumerate(expand("reward/<type>/<role>")):
        row[name] = round(-0.5 + 0.1 * i + 0.05 * step, 3)
    for name in expand("propose/valid_rate/<type>") + expand("solve/accuracy/<type>"):
        row[name] = min(1.0, 0.1 * step)
    for i, name in enumerate(expand("buffer/size/<type>")):
        row[name] = 16 + 4 * step + i
    row |= {"solve/copy_rate/abduction": 0.1 * step, "solve/copy_task_rate/abduction": 0.05 * step}
    row |= {"solve/copy_proof_accuracy/deduction": 0.02 * step}
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
                  "Seconds per phase", "In-training evaluation", "Copy shortcut",
                  "Solve accuracy where copying the prompt cannot be right"):  # fmt: skip
        assert title in page
    assert "Proposer learnability" not in page  # no data -> no empty chart
    assert "smollm2-135m" in page and "4 of 10" in page  # summary from config.toml
    assert "Last step (4)" in page and "eval/cruxeval-o" in page
    assert_inert(page)
    data = embedded(page)
    assert data["tasks"][0]["program"].endswith(f"'{EVIL}' + x") and data["tasks"][0]["outputs"] == ["'<b>a'"]
    assert data["rollouts"][0]["answer"] == EVIL and data["rollouts"][0]["adv"] is None
    assert "Browse tasks and rollouts" in page and "written before the safety monitor" in page
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing fetched
    assert not list(path.parent.glob(".report.html.*"))


def test_report_without_store_or_config(tmp_path):
    run = _make_run(tmp_path / "run", store=False)
    (run / "config.toml").unlink()
    page = write_report(run).read_text()
    assert "<svg" in page and "Browse tasks" not in page and "Config" not in page and "<script" not in page


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
    assert_inert(page)
    data = embedded(page)
    assert data["tasks"][0]["inputs"] == ["1", "2"] and data["tasks"][0]["message"] == "add <one>"
    assert data["rollouts"][0]["answer"] == EVIL and data["rollouts"][0]["flags"] == []
    assert "could not" not in write_report(tmp_path).read_text()


HOSTILE = "</script><script>alert(1)</script><img src=x onerror=alert(2)>\u2028&amp;<!--"


def test_hostile_model_text_cannot_break_out_of_the_data_block(tmp_path):
    """A reply closing the script element, HTML, an entity, a comment opener and U+2028 stay one JSON string."""
    from azr.report.browser import json_script

    block = json_script("x", {"s": HOSTILE})
    assert block.count("</script>") == 1 and block.endswith("</script>")
    text = block.removeprefix('<script type="application/json" id="x">').removesuffix("</script>")
    assert json.loads(text) == {"s": HOSTILE}

    from azr.store import TaskStore
    from azr.types import Task, TaskType

    with TaskStore(tmp_path) as store:
        store.add_tasks([Task(TaskType.DEDUCTION, f"def f(x):\n    return {HOSTILE!r}", ("1",), ("2",))], 1)
        flag = {"category": HOSTILE, "rule": "r", "excerpt": HOSTILE, "part": "answer", "source": "detector"}
        store.log_rollouts([{"step": 1, "role": "propose", "type": "deduction", "prompt": "p",
                             "reply": f"<think>{HOSTILE}</think>{HOSTILE}", "parse_status": "ok",
                             "outcome": "valid", "flags": [flag]}])  # fmt: skip
    page = write_report(tmp_path).read_text()
    assert_inert(page)
    row = embedded(page)["rollouts"][0]
    assert (row["think"], row["answer"], row["flags"][0]["excerpt"]) == (HOSTILE, HOSTILE, HOSTILE)
    assert "&lt;img src=x onerror=alert(2)&gt;" in page  # the safety table shows the excerpt, escaped


def test_views_of_a_real_store(tmp_path):
    """Difficulty, diversity, duplicates and flags from a store the current schema wrote."""
    from azr.report.views import program_shape
    from azr.store import TaskStore
    from azr.types import Task, TaskType

    assert program_shape("def f(x):\n    return x + 1") == program_shape("def f(y):\n    return y + 2")
    assert program_shape("def f(x):\n    return x + 1") != program_shape("def f(x):\n    return [x]")
    assert program_shape("def f(:") is None
    with TaskStore(tmp_path) as store:
        tasks = [
            Task(TaskType.DEDUCTION, f"def f(x):\n    return x + {k}", (str(k),), (str(2 * k),))
            for k in range(4)
        ]
        for step, task in enumerate(tasks, 1):
            store.add_tasks([task], step)
        store.record_solve_stats_many([(1, 2, 1), (2, 2, 0), (3, 1, 1)])
        rows = [
            {
                "step": s,
                "role": "propose",
                "type": "deduction",
                "prompt": "p",
                "reply": "r",
                "parse_status": "ok",
                "reward": 0.5,
                "outcome": o,
            }
            for s, o in ((1, "valid"), (2, "duplicate"), (3, "valid"), (4, "timeout"))
        ]
        rows[3]["flags"] = [{"category": "timeout", "rule": "timeout", "excerpt": "", "part": "program",
                             "source": "sandbox"}]  # fmt: skip
        store.log_rollouts(rows)
    page = write_report(tmp_path).read_text()
    for title in ("Difficulty of the proposals", "Mean solve rate of proposed tasks", "learnable",
                  "Median program length", "Distinct AST node types", "Duplicates", "Safety monitor"):  # fmt: skip
        assert title in page, title
    duplicates = page[page.index("<h3>Duplicates</h3>") :]
    dup = re.search(r"<td>deduction</td><td class='num'>(\d+)</td><td class='num'>(\d+)</td>", duplicates)
    assert dup.groups() == ("3", "1")  # three valid proposals, one of them a duplicate
    assert "<td>sandbox</td><td>timeout</td><td class='num'>1</td>" in page


def test_comparison_overlays_runs_and_their_evals(tmp_path, capsys):
    a, b = _make_run(tmp_path / "a"), _make_run(tmp_path / "b", steps=3)
    (b / "config.toml").write_text('[model]\nname = "other"\n\n[training]\nsteps = 10\n')
    assert main(["report", str(a), str(b)]) == 0
    out = Path(capsys.readouterr().out.strip())
    assert out == a / "compare.html"
    page = out.read_text()
    assert "<script" not in page and "Config differences" in page and "&#x27;other&#x27;" in page
    assert "reward/deduction/propose" in page and page.count("<polyline") >= 2 * 6
    assert "eval/cruxeval-o" in page and "0.25 (0.25, step 4)" in page  # last (best) eval of run a
    target = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "--out", str(target)]) == 0 and target.is_file()
    assert main(["report", str(a), str(tmp_path / "missing")]) == 2


def test_comparison_reads_old_config_keys_under_their_new_names(tmp_path):
    from azr.report.compare import _config_diff

    a, b = tmp_path / "a", tmp_path / "b"
    for run, text in ((a, "[selfplay]\nn_seed = 8\n"), (b, "[selfplay]\nn_seed_tasks = 8\nbatch_size = 2\n")):
        run.mkdir()
        (run / "config.toml").write_text(text)
    section = _config_diff([a, b], {a: "a", b: "b"})
    assert "selfplay.batch_size" in section and "n_seed" not in section
