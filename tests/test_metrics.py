"""Metrics: the JSONL log survives crashes and resumes, sinks cannot crash the loop, the namespace is documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from azr import metrics
from azr.config import LoggingConfig
from azr.errors import AzrError
from azr.fsutil import atomic_write_json, atomic_write_text
from azr.metrics import (
    METRICS,
    MetricsLogger,
    expand,
    format_step_line,
    merge_steps,
    read_metrics,
    rewind_metrics,
    sample_table,
)
from azr.types import GROUPS, group_name

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def _logger(run_dir: Path, **kw) -> MetricsLogger:
    return MetricsLogger(run_dir, LoggingConfig(**kw), "test-run", {"training": {"steps": 3}})


def test_log_appends_one_row_per_call_and_reads_back(tmp_path):
    with _logger(tmp_path) as log:
        log.log(1, {"reward/deduction/solve": 0.5, "note": "hi"})
        log.log(2, {"reward/deduction/solve": -0.25, "train/tokens": 12})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward/deduction/solve"] == 0.5 and rows[0]["note"] == "hi"
    assert rows[1]["train/tokens"] == 12 and isinstance(rows[1]["time"], float)
    # the file is plain JSONL: one object per line
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]


def test_non_finite_and_tensor_values_are_json_safe(tmp_path):
    torch = pytest.importorskip("torch")
    with _logger(tmp_path) as log:
        log.log(1, {"train/loss": float("nan"), "train/grad_norm": torch.tensor(2.5), "flag": True})
    text = (tmp_path / "metrics.jsonl").read_text()
    assert "NaN" not in text
    row = json.loads(text)
    assert row["train/loss"] is None and row["train/grad_norm"] == 2.5 and row["flag"] == 1


def test_torn_last_line_is_skipped_and_cut_before_appending(tmp_path):
    with _logger(tmp_path) as log:
        log.log(1, {"train/loss": 1.0})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "train/lo')  # the process died mid-write
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    with _logger(tmp_path) as log:
        log.log(2, {"train/loss": 0.5})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_read_metrics_of_missing_file_is_empty(tmp_path):
    assert read_metrics(tmp_path) == []
    assert rewind_metrics(tmp_path, 3) == 0


def test_rewind_drops_later_steps_so_resume_logs_each_step_once(tmp_path):
    with _logger(tmp_path) as log:
        for step in range(1, 6):
            log.log(step, {"train/loss": step / 10})
    assert rewind_metrics(tmp_path, 3) == 2  # crash after step 5, checkpoint at step 3
    with _logger(tmp_path) as log:
        log.log(4, {"train/loss": 0.44})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train/loss"] == 0.44
    assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temp file left behind


def test_merge_steps_joins_rows_of_one_step():
    rows = [{"step": 2, "a": 1}, {"step": 1, "a": 0}, {"step": 2, "eval/cruxeval-o": 0.3, "a": 5}]
    assert merge_steps(rows) == [{"step": 1, "a": 0}, {"step": 2, "a": 5, "eval/cruxeval-o": 0.3}]


class _FlakySink:
    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0
        self.closed = False

    def log(self, step, scalars):
        self.calls += 1
        raise ConnectionError("network is down")

    def close(self):
        self.closed = True


def test_failing_sink_is_disabled_with_one_warning_and_jsonl_continues(tmp_path):
    sink = _FlakySink()
    with _logger(tmp_path) as log:
        log.sinks.append(sink)
        with pytest.warns(RuntimeWarning, match="flaky failed"):
            log.log(1, {"train/loss": 1.0})
        log.log(2, {"train/loss": 0.9})  # no second warning, no exception
    assert sink.calls == 1 and sink.closed
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_missing_extras_raise_azr_error_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # makes `import wandb` raise ImportError
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(AzrError, match=r"pip install 'azr\[wandb\]'"):
        _logger(tmp_path, wandb=True)
    with pytest.raises(AzrError, match=r"pip install 'azr\[tensorboard\]'"):
        _logger(tmp_path, tensorboard=True)


def test_wandb_sink_resumes_with_a_stable_id(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, scalars, step):
            calls.append(("log", step, scalars))

        def finish(self):
            calls.append(("finish",))

    class FakeWandb:
        @staticmethod
        def init(**kw):
            calls.append(("init", kw))
            return FakeRun()

    monkeypatch.setitem(sys.modules, "wandb", FakeWandb)
    for step in (1, 2):
        with _logger(tmp_path, wandb=True, wandb_project="p") as log:
            log.log(step, {"train/loss": 1.0, "note": "text is not mirrored"})
    inits = [c[1] for c in calls if c[0] == "init"]
    assert inits[0]["id"] == inits[1]["id"] == (tmp_path / "wandb_id.txt").read_text().strip()
    assert inits[0]["project"] == "p" and inits[0]["resume"] == "allow" and inits[0]["name"] == "test-run"
    assert ("log", 2, {"train/loss": 1.0}) in calls and calls[-1] == ("finish",)


def test_tensorboard_sink_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    with _logger(tmp_path, tensorboard=True) as log:
        log.log(1, {"train/loss": 1.0})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_atomic_writes_replace_whole_file(tmp_path):
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_text(target.with_suffix(".txt"), "x")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json", "state.txt"]


def _documented() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| (.+?) \|$", DOCS.read_text(), flags=re.M)
    return dict(rows)


def test_docs_list_exactly_the_metrics_namespace():
    documented = _documented()
    assert set(documented) == set(METRICS), "docs/metrics.md and azr.metrics.METRICS disagree"
    for name, text in METRICS.items():
        assert documented[name] == text, f"description of {name} differs between docs and code"


def test_group_templates_expand_to_the_six_groups_in_order():
    assert expand("reward/<type>/<role>") == [f"reward/{group_name(t, r)}" for t, r in GROUPS]
    assert expand("train/loss") == ["train/loss"]
    assert metrics.describe("solve/accuracy/induction") == METRICS["solve/accuracy/<type>"]
    assert metrics.describe("nope") is None


def test_format_step_line_uses_known_keys_and_skips_missing():
    m = {
        "reward/deduction/propose": 0.123,
        "reward/deduction/solve": -0.5,
        "propose/valid_rate/deduction": 0.5,
        "propose/valid_rate/abduction": 0.3,
        "solve/accuracy/induction": 0.18,
        "perf/tokens_per_s": 85.4,
        "perf/seconds/step": 74.21,
    }
    line = format_step_line(3, 10, m)
    assert line == "step 3/10 | R d/p +0.12 d/s -0.50 | valid 0.40 | solve 0.18 | 85 tok/s | 74.2 s"
    assert format_step_line(1, 2, {}) == "step 1/2"


def test_sample_table_truncates_and_keeps_markup_literal():
    from rich.console import Console

    rows = [
        {"type": "deduction", "role": "solve", "prompt": "x" * 500 + " END", "reply": "[bold]hi[/bold] " * 50,
         "reward": 1.0},
        {"group": "induction/propose", "prompt": "p", "reply": "def f(x):\n    return x", "reward": None},
    ]  # fmt: skip
    console = Console(width=200, record=True)
    console.print(sample_table(rows))
    out = console.export_text()
    assert "deduction/solve" in out and "induction/propose" in out
    assert "[bold]hi" in out  # shown literally, not as markup
    assert "END" in out and "x" * 100 not in out  # prompt tail, clipped
    assert "+1.00" in out and "def f(x): return x" in out


def test_sink_that_cannot_connect_is_skipped_with_a_warning(tmp_path, monkeypatch):
    class OfflineWandb:
        @staticmethod
        def init(**kw):
            raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "wandb", OfflineWandb)
    with pytest.warns(RuntimeWarning, match="could not start"), _logger(tmp_path, wandb=True) as log:
        log.log(1, {"train/loss": 1.0})
        assert log.sinks == []
    assert len(read_metrics(tmp_path)) == 1


def test_importing_metrics_and_report_loads_nothing_heavy():
    code = (
        "import sys, azr.metrics, azr.report.run, azr.commands.report\n"
        "heavy = [m for m in ('torch', 'wandb', 'tensorboard', 'rich', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
