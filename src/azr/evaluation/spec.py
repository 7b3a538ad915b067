"""The shapes a benchmark is made of: an item, a judged reply, the scorers' shared context and the registry entry.

Kept apart from :mod:`.benchmarks` (the registry itself) so that benchmark modules such as :mod:`.probe` can
build entries without importing the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from azr.evaluation import scoring_math as sm
from azr.evaluation.demos import NO_SHOTS, Shots
from azr.evaluation.loaders import BenchmarkUnavailable, Source, load_rows
from azr.evaluation.scoring_code import ExpectedOutputs
from azr.seams import ExecutorLike

WRONG = "'azr-wrong-answer'"
"""The wrong output of ``--model oracle-wrong`` (a well-formed literal no benchmark item expects); its wrong
input is ``None``, which makes nearly every program fail or return something else."""

Rows = Callable[[str | Path | None, int | None], list[dict[str, Any]]]
"""A custom row loader ``(data_dir, limit) -> rows`` for benchmarks that do not come from a :class:`Source`."""


@dataclass(frozen=True)
class Item:
    """One benchmark question: its id, the gold answer as text, and the fields its family needs."""

    id: str
    gold: str
    data: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Scored:
    """One reply judged: right or not, what was read from it, and a short note."""

    correct: bool
    extracted: str | None
    detail: str = ""


class PromptFn(Protocol):
    """Renders an item (chat-formatted with ``tokenizer``) after the worked demonstrations of ``shots``."""

    def __call__(self, item: Item, tokenizer: Any, shots: Shots = NO_SHOTS) -> str: ...


@dataclass
class ScoreContext:
    """What the scorers share during one evaluation: the sandbox, the expected-output cache, the math judge."""

    executor: ExecutorLike | None
    expected_cache: Path | None = None
    _expected: ExpectedOutputs | None = None
    _judge: sm.MathJudge | None = None

    def expected(self) -> ExpectedOutputs:
        if self.executor is None:
            raise ValueError("code benchmarks need an executor")
        if self._expected is None:
            self._expected = ExpectedOutputs(self.executor, self.expected_cache)
        return self._expected

    def judge(self) -> sm.MathJudge:
        if self._judge is None:
            self._judge = sm.MathJudge()
        return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()


@dataclass(frozen=True)
class Benchmark:
    """A registry entry. ``prompt`` renders an item (chat-formatted with ``tokenizer``, after ``shots``
    demonstrations), ``oracle`` writes the gold reply (or a wrong one), ``score`` judges replies aligned with
    items.

    ``demo_types`` names the ``demos.jsonl`` types its demonstrations come from (empty: it takes none). ``rows``
    replaces the :class:`Source` loader; ``part`` maps an item to a sub-benchmark name (``probe/deduction``),
    and results are then reported for the whole and for each part."""

    name: str
    family: str
    source: Source
    make_item: Callable[[dict[str, Any], int], Item]
    prompt: PromptFn
    oracle: Callable[[Item, bool], str]
    score: Callable[[ScoreContext, list[Item], list[str]], list[Scored]]
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    demo_types: tuple[str, ...] = ()
    rows: Rows | None = None
    part: Callable[[Item], str] | None = None

    def load(self, data_dir: str | Path | None, limit: int | None) -> list[Item]:
        """The first ``limit`` items; raises :class:`BenchmarkUnavailable` when the data cannot be had."""
        rows = self.rows(data_dir, limit) if self.rows else load_rows(self.source, data_dir, limit)
        try:
            return [self.make_item(row, i) for i, row in enumerate(rows)]
        except KeyError as e:
            raise BenchmarkUnavailable(
                f"{self.name}: the rows have no field {e} (use the upstream release files with --data-dir)"
            ) from None
