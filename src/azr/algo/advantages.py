"""TRR++ (Task-Relative REINFORCE++, arXiv 2505.03335 eq. 8): rewards normalised within each task-type x role group.

Absolute Zero trains six kinds of reply at once (deduction, abduction, induction x propose, solve). Their rewards
live on different scales (a proposer earns learnability in [0, 1), a solver 0 or 1), so each group gets its own
baseline and scale::

    A_i = (r_i - mean_g) / (std_g + eps)        for sequence i in group g

Every token of a reply then carries its sequence's advantage.

How it differs from its neighbours:

- GRPO groups the n replies *to one prompt*; TRR++ groups by *task type and role* across all prompts of the step,
  so a proposer with one sample per prompt still gets a baseline.
- REINFORCE++ whitens with one global batch mean/std; TRR++ does it per group, so one group's reward scale never
  shifts another's advantages.

Worked example (``trr++``, Bessel-corrected std, eps ignored)::

    rewards = [1.0, 0.0, -1.0, 0.5, 0.5];  groups = [0, 0, 0, 1, 1]
    group 0: mean 0, std sqrt((1 + 0 + 1) / 2) = 1   -> [1.0, 0.0, -1.0]
    group 1: constant                                -> [0.0, 0.0]

Edge cases (a choice, used by both estimators): a group with one member, or whose rewards are all equal, gets
advantage exactly 0. There is no signal to rank it against, and dividing 0 by ``eps`` would only amplify
floating-point noise. The std is Bessel-corrected (divided by n - 1), as torch.std and the reference's whitening do.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

AdvantageFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]


def _weighted_group_whiten(
    rewards: torch.Tensor, group_ids: torch.Tensor, weights: torch.Tensor, eps: float
) -> torch.Tensor:
    """Whiten ``rewards`` (N,) within groups where sequence i counts ``weights[i]`` times. Returns (N,)."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # (N,) contiguous group index
    n_groups = int(inv.max().item()) + 1 if inv.numel() else 0
    r = rewards.to(torch.float64)  # (N,)
    w = weights.to(torch.float64)  # (N,)
    zeros = torch.zeros(n_groups, dtype=torch.float64, device=r.device)
    w_sum = zeros.index_add(0, inv, w)  # (G,)
    mean = zeros.index_add(0, inv, w * r) / w_sum.clamp_min(1e-12)  # (G,)
    centred = r - mean[inv]  # (N,)
    var = zeros.index_add(0, inv, w * centred**2) / (w_sum - 1.0).clamp_min(1e-12)  # (G,)
    adv = centred / (var.sqrt()[inv] + eps)  # (N,)
    count = zeros.index_add(0, inv, torch.ones_like(r))  # (G,) sequences per group
    r_max = torch.full_like(zeros, -torch.inf).scatter_reduce(0, inv, r, reduce="amax")  # (G,)
    r_min = torch.full_like(zeros, torch.inf).scatter_reduce(0, inv, r, reduce="amin")  # (G,)
    degenerate = (count <= 1) | (r_max == r_min) | (w_sum <= 1.0)  # (G,)
    adv = torch.where(degenerate[inv], torch.zeros_like(adv), adv)
    return adv.to(rewards.dtype if rewards.is_floating_point() else torch.float32)


def trr_pp(
    rewards: torch.Tensor, group_ids: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Paper TRR++: per-group mean and std over *sequences*; ``lengths`` is ignored. Returns (N,)."""
    return _weighted_group_whiten(rewards, group_ids, torch.ones_like(rewards, dtype=torch.float64), eps)


def trr_pp_token(
    rewards: torch.Tensor, group_ids: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Reference TRR++: per-group whitening over *tokens*, each sequence's reward counted once per token.

    Long replies weigh more in the mean and std, so the advantages have zero token-weighted (not per-sequence)
    mean. With group rewards ``[1, 0, -1]`` and lengths ``[2, 1, 1]``: token mean 0.25, std 0.957, advantages
    ``[0.783, -0.261, -1.306]``. ``lengths`` (N,) are the reply token counts and are required.
    """
    if lengths is None:
        raise ValueError("trr++-token needs the reply lengths")
    if bool((lengths < 0).any()):
        raise ValueError("lengths must be >= 0")
    return _weighted_group_whiten(rewards, group_ids, lengths, eps)


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {"trr++": trr_pp, "trr++-token": trr_pp_token}
"""Advantage estimators by name (``AlgorithmConfig.advantage``)."""


def compute_advantages(
    name: str,
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    lengths: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Advantages (N,) from rewards (N,) and integer group ids (N,) with the estimator called ``name``.

    ``group_ids`` may be any integers (e.g. the index of the group in :data:`azr.types.GROUPS`); only equality
    matters. ``lengths`` (N,) is needed by ``trr++-token``.
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r} (known: {', '.join(ADVANTAGE_ESTIMATORS)})")
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError("rewards and group_ids must be 1-D tensors of the same length")
    if lengths is not None and lengths.shape != rewards.shape:
        raise ValueError("lengths must have the same shape as rewards")
    if rewards.numel() == 0:
        return rewards.clone().float()
    return ADVANTAGE_ESTIMATORS[name](rewards, group_ids, lengths, eps)
