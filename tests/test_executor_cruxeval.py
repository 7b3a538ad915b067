"""CRUXEval programs validate under the strongest tier with the expected outputs (50 fast, all 800 with -m slow)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from azr.config import ExecutorConfig
from azr.executor import Executor, literals_equal


@pytest.fixture
def rows(shared_data: Path) -> list[dict]:
    path = shared_data / "benchmarks" / "cruxeval.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not present")
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _check(rows: list[dict]) -> None:
    with Executor(ExecutorConfig()) as ex:
        results = ex.validate_many([(r["code"], r["input"]) for r in rows])
    bad = [
        (row["id"], res.status, res.message[:80])
        for row, res in zip(rows, results, strict=True)
        if not (res.ok and literals_equal(res.value or "", row["output"]))
    ]
    assert bad == []


def test_first_50_validate(rows: list[dict]) -> None:
    _check(rows[:50])


@pytest.mark.slow
def test_all_800_validate(rows: list[dict]) -> None:
    _check(rows)
