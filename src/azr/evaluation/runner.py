"""``evaluate``: generate replies for benchmark items with any backend and score them with the shared sandbox.

The same function serves ``azr eval`` and the training loop (``eval_every``): the caller brings the backend, the
tokenizer (for chat formatting; None gives plain-text prompts) and the executor. ``samples=1`` decodes greedily
(temperature 0) and reports pass@1; ``samples=k`` draws k replies per item at ``temperature`` and reports the mean
pass@1 and the unbiased pass@k. :class:`OracleBackend` answers with the gold (or a wrong) reply of each item,
which checks data and scorers without a model.

``shots=K`` puts K fixed worked demonstrations (:mod:`.demos`) before every item; 2 is what the project reports
(the CPU training prompts carry 2). The results' ``meta`` records what makes two runs comparable: ``shots``, the
demonstration file's name and sha256, the demonstration ids each benchmark used and its token budget.
``demo_think="trace"`` gives the deduction/abduction demonstrations the sandbox-written trace in ``<think>`` that
the CPU recipe trains on, instead of one sentence; their replies then need more room, so benchmarks with those
demonstrations get at least ``TRACE_REPLY_TOKENS`` (the recipe's solve budget) unless ``max_new_tokens`` is given.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from azr.evaluation.benchmarks import Benchmark, Item, ScoreContext, Scored, resolve, with_tokens
from azr.evaluation.demos import (
    DEMO_FILE,
    DEMO_THINKS,
    NO_SHOTS,
    TRACED_TYPES,
    Demo,
    DemoError,
    Shots,
    demo_sha256,
    trace_thinks,
    wrong_demos,
)
from azr.evaluation.loaders import BenchmarkUnavailable
from azr.evaluation.passk import mean_pass_at_k
from azr.evaluation.results import BenchResult, EvalResults, ItemRecord
from azr.evaluation.shortcut import shown_for
from azr.seams import ExecutorLike

Progress = Callable[[str, int, int], None]  # (bench, done, total)
TRACE_REPLY_TOKENS = 192
TRACE_LINES = 12  # the CPU recipe's selfplay.demo_trace


class OracleBackend:
    """A pseudo-model that replies with each item's gold answer (``wrong=True``: a well-formed wrong answer)."""

    def __init__(self, wrong: bool = False) -> None:
        self.wrong = wrong

    def replies(self, bench: Benchmark, items: Sequence[Item]) -> list[str]:
        return [bench.oracle(item, self.wrong) for item in items]


def evaluate(
    backend: Any,
    tokenizer: Any,
    executor: ExecutorLike,
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
    shots: int = 0,
    demo_think: str = "sentence",
    demo_file: Path = DEMO_FILE,
) -> EvalResults:
    """Evaluate ``backend`` on ``benches`` (names, see ``BENCHMARKS``); unavailable benchmarks are skipped with
    their reason in ``EvalResults.skipped``. ``limit`` takes the first N items of each benchmark; ``shots`` worked
    demonstrations from ``demo_file`` go before each item, with the ``demo_think`` form of ``<think>`` (see the
    module docstring). DemoError when the file has too few of a needed type, or the sandbox computes another
    output for one of them, before anything is generated."""
    if samples < 1 or shots < 0 or demo_think not in DEMO_THINKS:
        raise ValueError(f"samples must be >= 1, shots >= 0 and demo_think one of {', '.join(DEMO_THINKS)}")
    specs = [_budget(b, max_new_tokens, demo_think) for b in resolve(benches)]
    demos = _demos(specs, Shots(shots, demo_file))
    used = list(dict.fromkeys(d for ds in demos.values() for d in ds))
    if wrong := wrong_demos(executor, used):
        raise DemoError(f"{demo_file}: the sandbox computes other outputs for demonstrations {wrong}")
    meta = _meta(specs, limit, samples, data_dir, Shots(shots, demo_file), demos)
    evaluation = EvalResults(meta=meta | {"demo_think": demo_think})
    traced = [d for d in used if d.type in TRACED_TYPES]
    thinks = trace_thinks(executor, traced, TRACE_LINES) if demo_think == "trace" else {}
    shown = Shots(shots, demo_file, thinks)
    ctx = ScoreContext(executor, expected_cache)
    try:
        for bench in specs:
            try:
                items = bench.load(data_dir, limit)
            except BenchmarkUnavailable as e:
                evaluation.skipped[bench.name] = str(e)
                continue
            t0 = time.perf_counter()
            replies = _generate(
                backend, tokenizer, bench, items, samples, temperature, batch_size, progress, shown
            )
            scored = bench.score(ctx, [it for it in items for _ in range(samples)], replies)
            _record(evaluation, bench, items, replies, scored, samples, time.perf_counter() - t0)
    finally:
        ctx.close()
    return evaluation


def _budget(bench: Benchmark, max_new_tokens: int | None, demo_think: str) -> Benchmark:
    if max_new_tokens is None and demo_think == "trace" and set(bench.demo_types) & set(TRACED_TYPES):
        max_new_tokens = max(bench.max_new_tokens, TRACE_REPLY_TOKENS)
    return with_tokens(bench, max_new_tokens)


def _demos(specs: list[Benchmark], shots: Shots) -> dict[str, list[Demo]]:
    """The demonstrations each benchmark shows (DemoError when the file has too few)."""
    return {b.name: [d for t in b.demo_types for d in shots.of(t)] for b in specs}


def _meta(
    specs: list[Benchmark],
    limit: int | None,
    samples: int,
    data_dir: str | Path | None,
    shots: Shots,
    demos: dict[str, list[Demo]],
) -> dict[str, Any]:
    """The settings of a run, with the demonstration ids per benchmark."""
    return {
        "limit": limit,
        "samples": samples,
        "data_dir": str(data_dir or "hub"),
        "shots": shots.k,
        "demo_file": shots.file.name,
        "demo_sha256": demo_sha256(shots.file),
        "demo_ids": {name: [d.id for d in ds] for name, ds in demos.items()},
        "max_new_tokens": {b.name: b.max_new_tokens for b in specs},
    }


def _generate(
    backend: Any,
    tokenizer: Any,
    bench: Benchmark,
    items: list[Item],
    samples: int,
    temperature: float,
    batch_size: int,
    progress: Progress | None,
    shots: Shots = NO_SHOTS,
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
    prompts = [bench.prompt(it, tokenizer, shots) for it in items for _ in range(samples)]
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        completions = backend.generate(prompts[start : start + batch_size], sampling)
        replies += [c.text for c in completions]
        if progress is not None:
            progress(bench.name, len(replies) // samples, len(items))
    return replies


def _record(
    evaluation: EvalResults,
    bench: Benchmark,
    items: list[Item],
    replies: list[str],
    scored: list[Scored],
    samples: int,
    seconds: float,
) -> None:
    """One record per item (under its part's name when the benchmark has parts) and the pass@k results: for the
    whole benchmark and, with parts, for each part (each part shows the whole run's ``seconds``)."""
    counts: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i, item in enumerate(items):
        name = bench.part(item) if bench.part else bench.name
        part = scored[i * samples : (i + 1) * samples]
        shown = shown_for(name, item.data)
        evaluation.records.append(
            ItemRecord(
                bench=name,
                id=item.id,
                gold=item.gold,
                replies=replies[i * samples : (i + 1) * samples],
                extracted=[s.extracted for s in part],
                correct=[s.correct for s in part],
                details=[s.detail for s in part],
                shown=shown.text if shown else None,
                copy_can_score=shown.copy_can_score if shown else None,
            )
        )
        counts[name].append((samples, sum(s.correct for s in part)))
    evaluation.results[bench.name] = _result(
        bench.name, [c for cs in counts.values() for c in cs], samples, seconds
    )
    if bench.part:
        for name, part_counts in counts.items():
            evaluation.results[name] = _result(name, part_counts, samples, seconds)


def _result(name: str, counts: list[tuple[int, int]], samples: int, seconds: float) -> BenchResult:
    pass_at = {k: mean_pass_at_k(counts, k) for k in sorted({1, samples})}
    return BenchResult(name, pass_at[1], len(counts), samples, pass_at, seconds)
