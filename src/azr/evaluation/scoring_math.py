"""Math answers: per-dataset gold extraction and a ``math-verify`` judge that runs in a worker process.

``math-verify`` enforces its own time limits with ``signal.alarm``, which works only in a main thread, and sympy can
still hang on a hostile expression; so every comparison runs in one long-lived worker process, and a comparison
that outlives ``timeout_s`` kills the worker (the answer counts as wrong) and a fresh one takes over. A worker
that dies is replaced and its pairs judged again, loudly (:meth:`MathJudge.judge_many`).
A reply is also right when its last ``\\boxed{}`` equals the gold answer as text after light normalisation, so an
answer that sympy cannot parse (a word, a unit) is still judged.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import re
import warnings
from typing import Any

from azr.errors import AzrError

_INSTALL = "math benchmarks need math-verify: pip install 'azr[eval]'"


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces matched; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i]
    return None


def extract_answer(reply: str) -> str:
    """What a reply answers, for the records: its last boxed value, else its ``<answer>`` text, else its last
    number, else the empty string. (The judge itself lets math-verify search the whole reply.)"""
    boxed = last_boxed(reply)
    if boxed is not None:
        return boxed.strip()
    tagged = re.findall(r"<answer>(.*?)</answer>", reply, flags=re.S)
    if tagged:
        return tagged[-1].strip()
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", reply)
    return numbers[-1].replace(",", "") if numbers else ""


def gold_gsm8k(row: dict[str, Any]) -> str:
    """GSM8K: the number after ``####`` at the end of the worked answer, without thousands separators."""
    return row["answer"].split("####")[-1].strip().replace(",", "")


def gold_field(row: dict[str, Any]) -> str:
    """MATH-500, AIME, AMC: the ``answer`` field; an integral float such as ``27.0`` becomes ``27``."""
    answer = row["answer"]
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    return str(answer).strip()


def gold_minerva(row: dict[str, Any]) -> str:
    """Minerva math: the last ``\\boxed{}`` of the reference solution."""
    boxed = last_boxed(row["solution"])
    if boxed is None:
        raise ValueError("minerva row without a boxed answer")
    return boxed.strip()


def gold_olympiad(row: dict[str, Any]) -> str:
    """OlympiadBench: ``final_answer`` is a list (or its text); several answers are joined with commas."""
    answers = row["final_answer"]
    if isinstance(answers, str):
        answers = [answers]
    return ", ".join(a.strip().strip("$").strip() for a in answers)


def normalize_text(answer: str) -> str:
    """Light textual normalisation for the fallback comparison: no spaces, ``$``, ``\\text{}``, ``\\left``/``\\right``."""
    answer = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", answer)
    answer = answer.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    answer = answer.replace("dfrac", "frac").replace("tfrac", "frac")
    return re.sub(r"[\s$]", "", answer).rstrip(".")


def verify_one(gold: str, reply: str) -> bool:
    """math-verify's judgement of ``reply`` against ``gold`` (a bare LaTeX answer), or the textual fallback.

    Runs in the worker process; importable so tests can call it directly.
    """
    from math_verify import parse, verify

    boxed = last_boxed(reply)
    if boxed is not None and normalize_text(boxed) == normalize_text(gold):
        return True
    gold_parsed = parse(gold if "$" in gold or "\\boxed" in gold else f"${gold}$")
    if not gold_parsed:
        gold_parsed = parse(gold)
    pred_parsed = parse(reply)
    return bool(gold_parsed and pred_parsed and verify(gold_parsed, pred_parsed))


class MathJudge:
    """Judges (gold, reply) pairs in one worker process with a per-pair time limit. Use as a context manager."""

    def __init__(self, timeout_s: float = 20.0) -> None:
        try:
            import math_verify  # noqa: F401  (fail early, with the install hint, in the parent)
        except ImportError:
            raise AzrError(_INSTALL) from None
        self.timeout_s = timeout_s
        self.crashes = self.timeouts = self.errors = 0
        self._pool: cf.ProcessPoolExecutor | None = None

    def __enter__(self) -> MathJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._kill()

    def judge_many(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """One verdict per ``(gold, reply)`` pair. A pair that raises or times out is wrong (counted in ``errors``,
        ``timeouts``). A worker that dies (``BrokenProcessPool``: killed, out of memory, a crash in native code)
        is replaced and the pairs it held are judged again, with a warning; a pair on which the fresh worker dies
        too counts as wrong, with a second warning. ``crashes`` counts the deaths."""
        futures = [self._submit(gold, reply) for gold, reply in pairs]
        verdicts: list[bool] = []
        crashed_on = -1
        while len(verdicts) < len(pairs):
            i = len(verdicts)
            try:
                verdicts.append(bool(futures[i].result(timeout=self.timeout_s)))
            except cf.TimeoutError:
                self.timeouts += 1
                verdicts.append(False)
                self._restart(futures, pairs, i + 1)  # the hung worker takes the queued pairs down with it
            except cf.process.BrokenProcessPool:
                self.crashes += 1
                again = crashed_on == i
                warnings.warn(
                    f"the math-judge worker died on pair {i}: "
                    + (
                        "a fresh one died on it too, so it counts as wrong"
                        if again
                        else "judging again in a fresh one"
                    ),
                    RuntimeWarning,
                    stacklevel=2,
                )
                if again:
                    verdicts.append(False)
                crashed_on = i
                self._restart(futures, pairs, len(verdicts))
            except Exception:
                self.errors += 1
                verdicts.append(False)
        return verdicts

    def _restart(self, futures: list[cf.Future[bool]], pairs: list[tuple[str, str]], start: int) -> None:
        """A fresh worker, with every pair from ``start`` on submitted to it again."""
        self._kill()
        futures[start:] = [self._submit(*pair) for pair in pairs[start:]]

    def _submit(self, gold: str, reply: str) -> cf.Future[bool]:
        if self._pool is None:
            ctx = multiprocessing.get_context("fork")  # no re-import of __main__; the worker needs no torch
            self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        try:
            return self._pool.submit(verify_one, gold, reply)
        except cf.process.BrokenProcessPool:
            self._kill()
            return self._submit(gold, reply)

    def _kill(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)
