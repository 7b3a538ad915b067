"""azr: Absolute Zero Reasoner self-play that runs anywhere.

Importing this package loads nothing heavy; the public pieces live in submodules:
``azr.algo`` (pure rewards, advantages and loss), ``azr.executor`` (the sandbox), ``azr.tasks`` (prompts, parsers,
validation), ``azr.store`` (SQLite task buffers), ``azr.rollout`` (generation backends), ``azr.selfplay`` (one step),
``azr.training.trainer`` (the policy update), ``azr.evaluation`` (benchmarks) and ``azr.cli``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
