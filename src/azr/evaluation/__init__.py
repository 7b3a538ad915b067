"""Benchmark evaluation: CRUXEval-O/I, the self-play probe, HumanEval+, MBPP+ and math sets, scored with the
training sandbox.

Public API: :func:`evaluate` (used by ``azr eval`` and the training loop), :class:`EvalResults`,
:class:`OracleBackend`, :data:`BENCHMARKS` and :func:`pass_at_k`; :mod:`.demos` holds the fixed worked
demonstrations (``shots``) and :mod:`.compare` the paired McNemar comparison of two results files
(``azr compare``). Heavy dependencies (``datasets``, ``math-verify``, the model) are imported only when a
benchmark needs them.
"""

from azr.evaluation.benchmarks import BENCHMARKS
from azr.evaluation.passk import pass_at_k
from azr.evaluation.results import BenchResult, EvalResults, ItemRecord
from azr.evaluation.runner import OracleBackend, evaluate

__all__ = ["BENCHMARKS", "BenchResult", "EvalResults", "ItemRecord", "OracleBackend", "evaluate", "pass_at_k"]
