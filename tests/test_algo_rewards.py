"""Rewards: learnability, solver accuracy and the format composite for both roles and both variants."""

from __future__ import annotations

import pytest

from azr.algo import REWARD_VARIANTS, composite, learnability, solver_reward


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ([1, 0, 0, 0, 0, 0, 0, 0], 0.875),
        ([1, 1, 1, 0], 0.25),
        ([0.0] * 8, 0.0),  # never solved: unlearnable
        ([1.0] * 8, 0.0),  # always solved: too easy
        ([], 0.0),
    ],
)
def test_learnability(outcomes, expected):
    assert learnability(outcomes) == pytest.approx(expected)


def test_solver_reward():
    assert solver_reward(True) == 1.0
    assert solver_reward(False) == 0.0


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_solver_composite_table(variant):
    assert composite(solver_reward(True), True, True, variant=variant) == 1.0
    assert composite(solver_reward(False), True, False, variant=variant) == -0.5
    assert composite(None, True, True, variant=variant) == 1.0
    assert composite(solver_reward(True), False, True, variant=variant) == -1.0
    assert composite(None, False, False, variant=variant) == -1.0


def test_proposer_composite_paper():
    assert composite(0.625, True, True) == 0.625  # valid, learnable
    assert composite(0.0, True, True) == 0.0  # valid, r_bar in {0, 1}: the paper keeps 0
    assert composite(0.0, True, False) == -0.5  # well formatted but invalid (fails execution/determinism)
    assert composite(None, False, False) == -1.0  # bad format


def test_proposer_composite_reference_penalises_unlearnable():
    assert composite(0.0, True, True, variant="reference") == -0.5
    assert composite(0.625, True, True, variant="reference") == 0.625
    assert composite(0.0, True, True, variant="reference", wrong_penalty=-0.25) == -0.25


def test_custom_penalties_and_unknown_variant():
    assert composite(None, False, True, format_penalty=-2.0) == -2.0
    assert composite(None, True, False, wrong_penalty=-0.1) == -0.1
    assert set(REWARD_VARIANTS) == {"paper", "reference"}
    with pytest.raises(ValueError, match="unknown reward variant"):
        composite(1.0, True, True, variant="nope")
