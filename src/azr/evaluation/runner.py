"""``evaluate``: generate replies for benchmark items with any backend and score them with the shared sandbox.

The same function serves ``azr eval`` and the training loop (``eval_every``): the caller brings the backend, the
tokenizer (for chat formatting; None gives plain-text prompts) and the executor. ``samples=1`` decodes greedily
(temperature 0) and reports pass@1; ``samples=k`` draws k replies per item at ``temperature`` and reports the mean
pass@1 and the unbiased pass@k. :class:`OracleBackend` answers with the gold (or a wrong) reply of each item,
which checks data and scorers without a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from azr.evaluation.benchmarks import Benchmark, Item, ScoreContext, Scored, resolve, with_tokens
from azr.evaluation.loaders import BenchmarkUnavailable
from azr.evaluation.passk import mean_pass_at_k
from azr.evaluation.report import BenchResult, EvalReport, ItemRecord

Progress = Callable[[str, int, int], None]  # (bench, done, total)


class OracleBackend:
    """A pseudo-model that replies with each item's gold answer (``wrong=True``: a well-formed wrong answer)."""

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def replies(self, bench: Benchmark, items: Sequence[Item]) -> list[str]:
        return [bench.oracle(item, self.wrong) for item in items]


def evaluate(
    backend: Any,
    tokenizer: Any,
    executor: Any,
    benches: list[str],
    limit: int | None = None,
    data_dir: str | Path | None = None,
    samples: int = 1,
    *,
    temperature: float = 0.8,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    expected_cache: Path | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Evaluate ``backend`` on ``benches`` (names, see ``BENCHMARKS``); unavailable benchmarks are skipped with
    their reason in ``report.skipped``. ``limit`` takes the first N items of each benchmark."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    report = EvalReport(meta={"limit": limit, "samples": samples, "data_dir": str(data_dir or "hub")})
    ctx = ScoreContext(executor, expected_cache)
    try:
        for bench in resolve(benches):
            bench = with_tokens(bench, max_new_tokens)
            try:
                items = bench.load(data_dir, limit)
            except BenchmarkUnavailable as e:
                report.skipped[bench.name] = str(e)
                continue
            t0 = time.perf_counter()
            replies = _generate(backend, tokenizer, bench, items, samples, temperature, batch_size, progress)
            scored = bench.score(ctx, [it for it in items for _ in range(samples)], replies)
            _record(report, bench.name, items, replies, scored, samples, time.perf_counter() - t0)
    finally:
        ctx.close()
    return report


def _generate(
    backend: Any,
    tokenizer: Any,
    bench: Benchmark,
    items: list[Item],
    samples: int,
    temperature: float,
    batch_size: int,
    progress: Progress | None,
) -> list[str]:
    """Replies in item order, ``samples`` consecutive replies per item."""
    if isinstance(backend, OracleBackend):
        return [r for r in backend.replies(bench, items) for _ in range(samples)]
    from azr.rollout.base import Sampling

    sampling = Sampling(
        temperature=0.0 if samples == 1 else temperature,
        top_p=1.0,
        max_new_tokens=bench.max_new_tokens,
        stop=bench.stop,
        n=1,
    )
    prompts = [bench.prompt(it, tokenizer) for it in items for _ in range(samples)]
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        completions = backend.generate(prompts[start : start + batch_size], sampling)
        replies += [c.text for c in completions]
        if progress is not None:
            progress(bench.name, len(replies) // samples, len(items))
    return replies


def _record(
    report: EvalReport,
    name: str,
    items: list[Item],
    replies: list[str],
    scored: list[Scored],
    samples: int,
    seconds: float,
) -> None:
    counts = []
    for i, item in enumerate(items):
        part = scored[i * samples : (i + 1) * samples]
        report.records.append(
            ItemRecord(
                bench=name,
                id=item.id,
                gold=item.gold,
                replies=replies[i * samples : (i + 1) * samples],
                extracted=[s.extracted for s in part],
                correct=[s.correct for s in part],
                details=[s.detail for s in part],
            )
        )
        counts.append((samples, sum(s.correct for s in part)))
    ks = sorted({1, samples})
    pass_at = {k: mean_pass_at_k(counts, k) for k in ks}
    report.results[name] = BenchResult(name, pass_at[1], len(items), samples, pass_at, seconds)
