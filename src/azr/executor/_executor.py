"""The task-level API over the worker pool: run, validate (determinism), check abduction and induction."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence

from azr.config import ExecutorConfig
from azr.errors import AzrError

from ._pool import Pool
from ._static import static_check
from ._tiers import TIERS, available_tiers, rank
from ._trace import ENTRY as TRACE_ENTRY
from ._trace import traced_program
from ._types import ExecResult, Status, from_row, rejected
from ._values import literals_equal, parse_arguments, parse_literal

log = logging.getLogger("azr.executor")


def _choose_tier(cfg: ExecutorConfig, tier: str | None) -> str:
    available = available_tiers()
    try:
        min_rank = rank(cfg.min_tier)
    except ValueError as e:
        raise AzrError(f"executor.min_tier: {e}") from None
    if tier is not None:
        try:
            rank(tier)
        except ValueError as e:
            raise AzrError(str(e)) from None
        if tier not in available:
            raise AzrError(
                f"sandbox tier {tier!r} is not available here (available: {', '.join(available)}); "
                "for bwrap install bubblewrap (apt-get install bubblewrap, or pip install azr[sandbox])"
            )
    chosen = tier or available[-1]
    if rank(chosen) < min_rank:
        raise AzrError(
            f"sandbox tier {chosen!r} is below executor.min_tier={cfg.min_tier!r}; the strongest available "
            f"here is {available[-1]!r}. Install bubblewrap and allow user namespaces, or lower min_tier."
        )
    if tier is None and chosen != TIERS[-1]:
        msg = f"sandbox falls back to the weaker tier {chosen!r} (bwrap unavailable: install bubblewrap)"
        warnings.warn(msg, stacklevel=3)
        log.warning(msg)
    return chosen


def _close_own_proc_entries() -> None:
    """Without bwrap, run as a non-root user, jobs share this process's uid and its /proc: mark it not dumpable,
    so that a job cannot read its memory or descriptors (the gold outputs compared here, the worker's pipes)."""
    from ._seccomp import prctl

    if prctl(4, 0) != 0:  # PR_SET_DUMPABLE
        raise AzrError("could not protect this process from sandboxed jobs (prctl PR_SET_DUMPABLE failed)")
    log.info("sandbox tier without namespaces as a non-root user: this process is now not dumpable")


class Executor:
    """A pool of sandboxed fork-server workers. Use as a context manager; every ``*_many`` call uses all workers.

    ``tier`` forces a tier (:data:`azr.executor.TIERS`); by default the strongest available one is used.
    ``workers`` overrides ``cfg.workers``; the pool always has at least ``cfg.determinism_runs`` workers, so that
    the runs of a determinism check happen in different interpreters.
    """

    def __init__(
        self, cfg: ExecutorConfig | None = None, tier: str | None = None, workers: int | None = None
    ):
        self.cfg = cfg or ExecutorConfig()
        self.tier = _choose_tier(self.cfg, tier)
        n = max(workers or self.cfg.workers, self.cfg.determinism_runs, 1)
        wcfg = {
            "timeout_s": float(self.cfg.timeout_s),
            "memory_mb": int(self.cfg.memory_mb),
            "max_out": int(self.cfg.max_output_chars),
            "max_file_bytes": 4 * 1024 * 1024,
            "parallel": 8,  # children per worker; forked in batches of half that (see _worker.run_jobs)
        }
        if self.tier in ("rlimits", "seccomp") and os.geteuid() != 0:
            _close_own_proc_entries()
        self._pool = Pool(self.tier, n, wcfg)
        log.info("sandbox started: tier=%s workers=%d", self.tier, n)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers; safe to call twice."""
        self._pool.close()

    @property
    def worker_pids(self) -> list[int]:
        """Pids of the processes the pool started (for tests and diagnostics)."""
        return self._pool.pids

    def _too_big(self, program: str, inputs: Sequence[str]) -> ExecResult | None:
        if len(program) > self.cfg.max_program_chars:
            return rejected(f"program longer than {self.cfg.max_program_chars} characters")
        if any(len(i) > self.cfg.max_input_chars for i in inputs):
            return rejected(f"input longer than {self.cfg.max_input_chars} characters")
        return None

    def _static(self, program: str, inputs: Sequence[str], entry: str = "f") -> ExecResult | None:
        too_big = self._too_big(program, inputs)
        if too_big:
            return too_big
        reason = static_check(program, self.cfg.max_program_chars, entry)
        return rejected(reason) if reason else None

    def run_jobs(self, jobs: list[dict], pins: list[int | None] | None = None) -> list[list[ExecResult]]:
        """Low level: raw jobs (see :mod:`azr.executor._pool`) to typed results, one list per job."""
        if not jobs:
            return []
        return [[from_row(r) for r in rows] for rows in self._pool.run_jobs(jobs, pins)]

    def run(self, program: str, input_text: str, entry: str = "f") -> ExecResult:
        """``entry(<input_text>)`` in one sandboxed child; no static check (see :meth:`validate_many`)."""
        return self.run_many([(program, input_text)], entry)[0]

    def run_many(self, items: Sequence[tuple[str, str]], entry: str = "f") -> list[ExecResult]:
        """Many independent runs, spread over the pool."""
        out: list[ExecResult | None] = [self._too_big(p, [i]) for p, i in items]
        todo = [k for k, r in enumerate(out) if r is None]
        jobs = [{"code": items[k][0], "calls": [items[k][1]], "entry": entry} for k in todo]
        for k, rows in zip(todo, self.run_jobs(jobs), strict=True):
            out[k] = rows[0]
        return out  # type: ignore[return-value]

    def run_program(self, program: str) -> ExecResult:
        """Execute a whole program (no call); OK with ``value=None`` if it finished without an exception."""
        too_big = self._too_big(program, [])
        return too_big or self.run_jobs([{"code": program, "calls": None, "entry": None}])[0][0]

    def run_calls(self, program: str, inputs: Sequence[str], entry: str = "f") -> list[ExecResult]:
        """Several calls of one function in ONE child (shared globals), one result per input, in order."""
        too_big = self._too_big(program, inputs)
        if too_big:
            return [too_big] * len(inputs)
        if not inputs:
            return []
        return self.run_jobs([{"code": program, "calls": list(inputs), "entry": entry}])[0]

    def trace_many(self, items: Sequence[tuple[str, str]], max_lines: int = 12) -> list[str | None]:
        """An execution trace of ``f(<input>)`` for each (program, input), written in the sandbox (see
        :mod:`azr.executor._trace`); ``None`` where the program did not run or the trace is too long."""
        out: list[str | None] = [None] * len(items)
        todo = [k for k, (p, i) in enumerate(items) if self._too_big(p, [i]) is None]
        jobs = [
            {
                "code": traced_program(items[k][0], max_lines),
                "calls": [items[k][1]],
                "entry": TRACE_ENTRY,
            }
            for k in todo
        ]
        for k, rows in zip(todo, self.run_jobs(jobs), strict=True):
            ok, text = parse_literal(rows[0].value) if rows[0].ok and rows[0].value else (False, None)
            out[k] = text if ok and isinstance(text, str) else None
        return out

    def validate_many(self, items: Sequence[tuple[str, str]], entry: str = "f") -> list[ExecResult]:
        """Static check, then ``determinism_runs`` runs, each one call of ``f`` in a fresh child (each in a different
        worker when the pool has enough: different hash seeds and memory layouts); OK with the gold ``value`` (from
        the first run) only if every run succeeded with equal results. Catches generators, ``id()``, ``hash()`` of
        str, set-order dependence, randomness and time. Every later use of a task also calls ``f`` once in a fresh
        child, so validation sees exactly the call pattern the task is used with (a program cannot tell the two
        apart, and state kept between calls never matters)."""
        runs = max(2, self.cfg.determinism_runs)
        out: list[ExecResult | None] = [self._static(p, [i], entry) for p, i in items]
        todo = [k for k, r in enumerate(out) if r is None]
        jobs, pins = [], []
        for k in todo:
            for j in range(runs):
                jobs.append({"code": items[k][0], "calls": [items[k][1]], "entry": entry})
                pins.append(j)
        rows = self.run_jobs(jobs, pins)  # type: ignore[arg-type]
        for n, k in enumerate(todo):
            out[k] = _agree([r for child in rows[n * runs : (n + 1) * runs] for r in child])
        return out  # type: ignore[return-value]

    def check_abduction_many(
        self, items: Sequence[tuple[str, str, str]], entry: str = "f", *, literals_only: bool = True
    ) -> list[ExecResult]:
        """``entry(candidate) == gold`` under :func:`literals_equal`; OK, WRONG, or the run's failure.

        By default (self-play) the candidate must be a list of literal arguments (REJECTED otherwise), so an
        answer cannot smuggle code or objects with a rigged ``__repr__``. ``literals_only=False`` is for
        benchmarks whose gold inputs are expressions (CRUXEval-I: ``''.join(['A'] * 20)``, ``dict(e=1)``): the
        candidate is then evaluated as call arguments inside the sandboxed child, as the benchmark's own harness
        does, and only the comparison with ``gold`` stays outside. Such an answer can run code in the child, so
        never use it where the verdict is a reward."""
        out: list[ExecResult | None] = []
        for program, candidate, _gold in items:
            bad = self._too_big(program, [candidate])
            if bad is None and literals_only and not parse_arguments(candidate)[0]:
                bad = rejected("the answer is not a list of literal arguments")
            out.append(bad)
        todo = [k for k, r in enumerate(out) if r is None]
        jobs = [{"code": items[k][0], "calls": [items[k][1]], "entry": entry} for k in todo]
        for k, rows in zip(todo, self.run_jobs(jobs), strict=True):
            out[k] = _compare(rows[0], items[k][2])
        return out  # type: ignore[return-value]

    def check_induction_many(
        self, items: Sequence[tuple[str, Sequence[str], Sequence[str]]], entry: str = "f"
    ) -> list[ExecResult]:
        """A candidate program against hidden (input, output) pairs, all calls in one child; OK iff every pair
        passes, else the first failing pair's result (WRONG, ERROR, TIMEOUT, ...). The program is statically
        checked, and the hidden outputs are compared outside the sandbox (the program never sees them)."""
        out: list[ExecResult | None] = [self._static(p, list(ins), entry) for p, ins, _ in items]
        todo = [k for k, r in enumerate(out) if r is None]
        jobs = [{"code": items[k][0], "calls": list(items[k][1]), "entry": entry} for k in todo]
        for k, rows in zip(todo, self.run_jobs(jobs), strict=True):
            rows = [_compare(r, gold) for r, gold in zip(rows, items[k][2], strict=True)]
            bad = [r for r in rows if not r.ok]
            total = sum(r.duration_s for r in rows)
            out[k] = (
                bad[0]
                if bad
                else ExecResult(Status.OK, message=f"{len(rows)} pairs passed", duration_s=total)
            )
        return out  # type: ignore[return-value]


def _compare(result: ExecResult, gold: str) -> ExecResult:
    """OK stays OK only if the result's repr equals ``gold`` (same text, or equal literals); else WRONG.

    The comparison happens here, outside the sandbox: the gold outputs never enter the child, so a candidate
    program cannot read them, and a forged result line cannot name the right answer."""
    if not result.ok or result.value == gold.strip() or literals_equal(result.value or "", gold):
        return result
    return dataclasses.replace(result, status=Status.WRONG, message=f"expected {gold[:200]}")


def _agree(results: list[ExecResult]) -> ExecResult:
    """Combine the determinism runs of one program: the first failure, NONDETERMINISTIC, or the first result."""
    for r in results:
        if not r.ok:
            return r
    first = results[0]
    for r in results[1:]:
        if r.value != first.value and not literals_equal(first.value or "", r.value or ""):
            return ExecResult(
                Status.NONDETERMINISTIC,
                message=f"runs differ: {first.value!r:.200} vs {r.value!r:.200}",
                duration_s=max(x.duration_s for x in results),
            )
    return first
