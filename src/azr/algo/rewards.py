"""Rewards of Absolute Zero (arXiv 2505.03335, section 3.2): learnability, accuracy and the format composite.

Each function is a few lines on plain floats so the loop can score a reply without any model in sight.

Paper values, per reply:

=========================  ======================  ===========================
reply                      proposer                solver
=========================  ======================  ===========================
format fails               -1                      -1
format ok, not accepted    -0.5 (invalid task)     -0.5 (wrong answer)
format ok, accepted        r_propose = 1 - r_bar   r_solve = 1
                           (0 if r_bar in {0, 1})
=========================  ======================  ===========================

The ``"reference"`` variant reproduces the authors' code, which also gives -0.5 to a *valid* proposal whose
learnability is 0 (every Monte-Carlo solve right, or every one wrong). The paper does not; it is the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def learnability(solve_outcomes: Sequence[float]) -> float:
    """Proposer reward from ``n`` Monte-Carlo solve outcomes (each 1.0 right or 0.0 wrong).

    ``r_bar`` is the mean solve rate; the reward is ``1 - r_bar`` when ``0 < r_bar < 1`` and 0 otherwise: a task
    every attempt solves, or none does, teaches nothing. ``[1, 0, 0, 0]`` gives ``0.75``; ``[]`` gives 0.
    """
    if not solve_outcomes:
        return 0.0
    r_bar = sum(solve_outcomes) / len(solve_outcomes)
    return 1.0 - r_bar if 0.0 < r_bar < 1.0 else 0.0


def solver_reward(correct: bool) -> float:
    """Solver accuracy reward: 1.0 for a correct answer, else 0.0."""
    return 1.0 if correct else 0.0


def _paper(role_reward: float, wrong_penalty: float) -> float:
    return role_reward


def _reference(role_reward: float, wrong_penalty: float) -> float:
    return wrong_penalty if role_reward == 0.0 else role_reward


REWARD_VARIANTS: dict[str, Callable[[float, float], float]] = {"paper": _paper, "reference": _reference}
"""How an accepted, well-formatted reply's role reward is mapped: ``paper`` keeps it, ``reference`` turns 0 into
the wrong-answer penalty (the authors' code; reference issue #37)."""


def composite(
    role_reward: float | None,
    format_ok: bool,
    correct: bool,
    *,
    wrong_penalty: float = -0.5,
    format_penalty: float = -1.0,
    variant: str = "paper",
) -> float:
    """The reward one reply trains on, for either role.

    - ``format_ok`` False (no ``<answer>``, unparsable blocks): ``format_penalty`` (-1).
    - ``format_ok`` and not ``correct``: ``wrong_penalty`` (-0.5). For the solver, ``correct`` is the answer
      check; for the proposer it means the proposal is *valid* (it parsed, passed the static check, ran and was
      deterministic), so an invalid but well-formatted proposal gets -0.5.
    - ``format_ok`` and ``correct``: the role reward, passed through the variant: the solver's
      :func:`solver_reward` (1) or the proposer's :func:`learnability` (in [0, 1)). ``None`` means "derive it from
      ``correct``", i.e. the solver's reward.

    With ``variant="reference"`` an accepted proposal whose learnability is 0 (r_bar in {0, 1}) also gets
    ``wrong_penalty``; a correct solver reply is unaffected (its role reward is 1).
    """
    if variant not in REWARD_VARIANTS:
        raise ValueError(f"unknown reward variant {variant!r} (known: {', '.join(REWARD_VARIANTS)})")
    if not format_ok:
        return format_penalty
    if not correct:
        return wrong_penalty
    reward = solver_reward(correct) if role_reward is None else float(role_reward)
    return REWARD_VARIANTS[variant](reward, wrong_penalty)
