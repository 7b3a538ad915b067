"""TRR++ advantages: a hand-derived six-group example, a loop reference, and hypothesis invariants."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from azr.algo import ADVANTAGE_ESTIMATORS, compute_advantages
from azr.types import GROUPS


def test_six_groups_by_hand():
    """One step with all six (task type x role) groups, interleaved in the batch. Bessel std, eps = 0.

    group                  rewards                  mean   std                              advantages
    0 deduction/propose    [-1, -0.5, 0]            -0.5   sqrt((.25 + 0 + .25) / 2) = 0.5  [-1, 0, 1]
    1 deduction/solve      [1, 1, -0.5, -0.5]       0.25   sqrt(4 * .5625 / 3) = sqrt(.75)  [+-0.75 / 0.866] = +-0.8660
    2 abduction/propose    [0.875]                  -      one member                       [0]
    3 abduction/solve      [-1, -1, -1]             -1     0 (constant)                     [0, 0, 0]
    4 induction/propose    [0.5, 0]                 0.25   sqrt(2 * .0625 / 1) = 0.3536     [+-0.7071]
    5 induction/solve      [1, -1]                  0      sqrt(2) = 1.4142                 [+-0.7071]
    """
    assert len(GROUPS) == 6
    rows = [  # (group, reward, expected advantage)
        (0, -1.0, -1.0), (1, 1.0, math.sqrt(3) / 2), (2, 0.875, 0.0), (3, -1.0, 0.0), (4, 0.5, 1 / math.sqrt(2)),
        (5, 1.0, 1 / math.sqrt(2)), (0, -0.5, 0.0), (1, 1.0, math.sqrt(3) / 2), (3, -1.0, 0.0),
        (4, 0.0, -1 / math.sqrt(2)), (5, -1.0, -1 / math.sqrt(2)), (0, 0.0, 1.0), (1, -0.5, -math.sqrt(3) / 2),
        (3, -1.0, 0.0), (1, -0.5, -math.sqrt(3) / 2),
    ]  # fmt: skip
    groups = torch.tensor([g for g, _, _ in rows])
    rewards = torch.tensor([r for _, r, _ in rows])
    expected = torch.tensor([a for _, _, a in rows])
    adv = compute_advantages("trr++", rewards, groups, eps=0.0)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)


def test_token_variant_by_hand():
    """Rewards [1, 0, -1], lengths [2, 1, 1]: token values [1, 1, 0, -1], mean 0.25,
    var = (2 * .75^2 + .25^2 + 1.25^2) / 3 = 2.75 / 3, std 0.9574 -> [0.7833, -0.2611, -1.3056]."""
    adv = compute_advantages(
        "trr++-token",
        torch.tensor([1.0, 0.0, -1.0]),
        torch.tensor([0, 0, 0]),
        torch.tensor([2, 1, 1]),
        eps=0.0,
    )
    std = math.sqrt(2.75 / 3)
    torch.testing.assert_close(adv, torch.tensor([0.75 / std, -0.25 / std, -1.25 / std]))


def reference_loop(rewards, groups, lengths, eps, token):
    """Plain-Python TRR++ to check the vectorised version against."""
    out = [0.0] * len(rewards)
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        w = [float(lengths[i]) if token else 1.0 for i in idx]
        r = [rewards[i] for i in idx]
        total = sum(w)
        if len(idx) < 2 or max(r) == min(r) or total <= 1:
            continue
        mean = sum(wi * ri for wi, ri in zip(w, r, strict=True)) / total
        var = sum(wi * (ri - mean) ** 2 for wi, ri in zip(w, r, strict=True)) / (total - 1)
        for i, ri in zip(idx, r, strict=True):
            out[i] = (ri - mean) / (math.sqrt(var) + eps)
    return out


reward_values = st.sampled_from([-1.0, -0.5, 0.0, 0.125, 0.5, 0.875, 1.0]) | st.floats(-1, 1, width=32)
rows_strategy = st.lists(
    st.tuples(reward_values, st.integers(0, 5), st.integers(1, 40)), min_size=1, max_size=40
)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)))
def test_matches_loop_reference(rows, name):
    rewards, groups, lengths = (list(x) for x in zip(*rows, strict=True))
    adv = compute_advantages(
        name,
        torch.tensor(rewards, dtype=torch.float64),
        torch.tensor(groups),
        torch.tensor(lengths),
        eps=1e-6,
    )
    expected = reference_loop(rewards, groups, lengths, 1e-6, token=name == "trr++-token")
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)))
def test_zero_mean_per_group(rows, name):
    rewards, groups, lengths = (list(x) for x in zip(*rows, strict=True))
    adv = compute_advantages(name, torch.tensor(rewards), torch.tensor(groups), torch.tensor(lengths))
    w = torch.tensor(lengths, dtype=torch.float32) if name == "trr++-token" else torch.ones(len(rows))
    for g in set(groups):
        sel = torch.tensor(groups) == g
        assert abs(float((adv[sel] * w[sel]).sum() / w[sel].sum())) < 1e-4


@settings(max_examples=60, deadline=None)
@given(rows=rows_strategy, name=st.sampled_from(sorted(ADVANTAGE_ESTIMATORS)), data=st.data())
def test_permutation_equivariance(rows, name, data):
    perm = data.draw(st.permutations(range(len(rows))))
    rewards, groups, lengths = (torch.tensor(list(x)) for x in zip(*rows, strict=True))
    adv = compute_advantages(name, rewards.float(), groups, lengths)
    p = torch.tensor(perm)
    adv_p = compute_advantages(name, rewards.float()[p], groups[p], lengths[p])
    torch.testing.assert_close(adv_p, adv[p], atol=1e-6, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(value=reward_values, n=st.integers(1, 12), other=st.lists(reward_values, min_size=2, max_size=6))
def test_constant_group_gets_zero(value, n, other):
    rewards = torch.tensor([value] * n + other)
    groups = torch.tensor([0] * n + [1] * len(other))
    for name in ADVANTAGE_ESTIMATORS:
        adv = compute_advantages(name, rewards, groups, torch.arange(1, len(rewards) + 1))
        assert torch.all(adv[:n] == 0)
        assert torch.isfinite(adv).all()


def test_size_one_group_and_errors():
    adv = compute_advantages("trr++", torch.tensor([0.3, 1.0, -1.0]), torch.tensor([7, 2, 2]))
    assert adv[0] == 0
    assert compute_advantages("trr++", torch.tensor([]), torch.tensor([], dtype=torch.long)).numel() == 0
    with pytest.raises(ValueError, match="unknown advantage"):
        compute_advantages("grpo", torch.tensor([1.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="lengths"):
        compute_advantages("trr++-token", torch.tensor([1.0, 0.0]), torch.tensor([0, 0]))
