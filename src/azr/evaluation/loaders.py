"""Benchmark rows from a local directory (gzip or plain JSONL, found by file-name pattern) or the datasets hub.

A local directory is searched with each benchmark's glob patterns (for example ``HumanEvalPlus*.jsonl*``), so the
upstream release files work unchanged. Without a directory the rows come from the Hugging Face hub through
``datasets`` (the ``eval`` extra), imported only then. Rows are plain dicts; each benchmark's spec knows its fields.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.errors import AzrError


class BenchmarkUnavailable(AzrError):
    """The data of a benchmark cannot be found or fetched; the runner skips it with this message."""


@dataclass(frozen=True)
class Source:
    """Where a benchmark's rows live: local file patterns and a hub dataset (id, config, split)."""

    patterns: tuple[str, ...]
    hub_id: str
    hub_split: str = "test"
    hub_config: str | None = None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a (possibly gzip-compressed) JSONL file; blank lines and a missing final newline are fine."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def find_local(data_dir: str | Path, patterns: tuple[str, ...]) -> Path:
    """The first file in ``data_dir`` that matches one of ``patterns`` (checked in order)."""
    if not patterns:
        raise BenchmarkUnavailable("this benchmark has no local file format: it loads only from the hub")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise BenchmarkUnavailable(f"data directory {root} does not exist")
    for pattern in patterns:
        hits = sorted(root.glob(pattern))
        if hits:
            return hits[0]
    raise BenchmarkUnavailable(f"no file matching {' or '.join(patterns)} in {root}")


def load_rows(source: Source, data_dir: str | Path | None, limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` rows (all when None) from ``data_dir`` if given, else from the hub."""
    if data_dir and source.patterns:
        rows = read_jsonl(find_local(data_dir, source.patterns))
    else:
        rows = list(_hub_rows(source))
    return rows[:limit] if limit is not None else rows


def _hub_rows(source: Source) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise BenchmarkUnavailable(
            "loading benchmarks from the hub needs `datasets`: pip install 'azr[eval]' (or pass --data-dir)"
        ) from None
    try:
        ds = datasets.load_dataset(source.hub_id, source.hub_config, split=source.hub_split)
    except Exception as e:  # offline, unknown id, gated: all mean "not available here"
        raise BenchmarkUnavailable(
            f"could not load {source.hub_id} from the hub ({e.__class__.__name__}); pass --data-dir"
        ) from None
    for row in ds:
        yield dict(row)
