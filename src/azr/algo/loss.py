"""PPO-clip policy-gradient loss with token-mean aggregation (the update of arXiv 2505.03335, section 3.3).

Per valid token t of sequence i, with ratio ``rho = exp(logp - old_logp)`` and the sequence advantage ``A_i``::

    pg_t = max(-A_i * rho, -A_i * clip(rho, 1 - eps_low, 1 + eps_high))

and the loss is ``sum_t pg_t / N_tokens - entropy_coef * mean entropy + kl_coef * mean KL``, where every mean is
over all valid tokens of the *whole batch* (token-mean, as in the paper and DAPO), not a mean of per-sequence
means. The paper uses eps = 0.2, entropy_coef = 0.001 and no KL term (no reference model).

Micro-batching: pass the total valid-token count of what one optimizer step trains on (the batch, or the PPO
mini-batch) as ``token_normalizer`` to every micro-batch call. Each micro-batch loss is then its token *sum*
divided by that count, so the gradients accumulated over the micro-batches equal the gradient of the true
token-mean loss of the step, and the returned metrics (same normaliser) simply add up across micro-batches.

The ratio is 1 only while the policy has not moved since ``old_logprobs`` were taken; with several optimizer steps
per batch the caller passes log-probs recorded before the first one, and clipping starts to act.
"""

from __future__ import annotations

from typing import Any

import torch


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    token_normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip loss and metrics for one (micro-)batch.

    Args:
        logprobs: (B, T) log-probs of the taken tokens under the current policy (with grad).
        old_logprobs: (B, T) log-probs under the policy that sampled them (no grad). Equal to ``logprobs`` when
            on-policy, which makes the loss gradient plain REINFORCE: ``-mean_t A_i * grad logp_t``.
        advantages: (B,) one advantage per sequence, broadcast over its tokens.
        mask: (B, T) 1 for reply tokens that count, 0 for prompt and padding.
        clip_eps, clip_eps_high: lower and upper clip range; ``None`` upper means symmetric.
        entropy: (B, T) per-token entropy of the current policy, required when ``entropy_coef > 0``.
        ref_logprobs: (B, T) reference-model log-probs, required when ``kl_coef > 0`` (k3 estimator).
        token_normalizer: divide token sums by this (the global valid-token count) instead of ``mask.sum()``.

    Returns:
        ``(loss, metrics)``; metrics are floats: ``pg_loss``, ``clip_frac``, ``approx_kl`` (old vs new),
        ``entropy`` and ``kl`` (when given), each a token-mean under the same normaliser.
    """
    mask = mask.to(logprobs.dtype)  # (B, T)
    denom = float(token_normalizer) if token_normalizer is not None else mask.sum().clamp_min(1.0)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    adv = advantages.to(logprobs.dtype).unsqueeze(1)  # (B, 1)
    log_ratio = logprobs - old_logprobs.detach()  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -adv * ratio  # (B, T)
    clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + eps_high)  # (B, T)
    pg = torch.maximum(unclipped, clipped)  # (B, T)
    pg_loss = (pg * mask).sum() / denom
    with torch.no_grad():
        metrics = {
            "pg_loss": float(pg_loss),
            "clip_frac": float(((clipped > unclipped).to(mask.dtype) * mask).sum() / denom),
            "approx_kl": float(((-log_ratio) * mask).sum() / denom),
        }
    loss = pg_loss + _regularisers(
        logprobs, mask, denom, entropy, entropy_coef, ref_logprobs, kl_coef, metrics
    )
    return loss, metrics


def _regularisers(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    denom: float | torch.Tensor,
    entropy: torch.Tensor | None,
    entropy_coef: float,
    ref_logprobs: torch.Tensor | None,
    kl_coef: float,
    metrics: dict[str, float],
) -> torch.Tensor | float:
    """The entropy bonus and the KL penalty (token means), logging each one that is given into ``metrics``."""
    extra: torch.Tensor | float = 0.0
    if entropy is not None:
        ent = (entropy * mask).sum() / denom
        metrics["entropy"] = float(ent.detach())
        if entropy_coef:
            extra = extra - entropy_coef * ent
    elif entropy_coef:
        raise ValueError("entropy_coef > 0 needs the per-token entropy")
    if ref_logprobs is not None:
        d = ref_logprobs.detach() - logprobs  # (B, T)
        kl = ((torch.exp(d) - d - 1.0) * mask).sum() / denom  # k3: unbiased, always >= 0
        metrics["kl"] = float(kl.detach())
        if kl_coef:
            extra = extra + kl_coef * kl
    elif kl_coef:
        raise ValueError("kl_coef > 0 needs reference log-probs")
    return extra


class _LogprobEntropy(torch.autograd.Function):
    """Token log-probs and entropies from logits in one pass, with a hand-fused backward.

    Autograd through ``logsumexp``, ``gather``, ``softmax`` and ``(p * z).sum()`` keeps several (N, V) temporaries
    alive; here only the logits are saved and the backward builds the gradient in a single (N, V) buffer::

        d logp_y / dz = onehot(y) - p          d H / dz = -p * (log p + H)
        grad_z = -p * (g_logp + g_H * (log p + H)) + g_logp * onehot(y)
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lse = torch.logsumexp(logits, dim=-1)  # (N,)
        logp = logits.gather(1, targets.unsqueeze(1)).squeeze(1) - lse  # (N,)
        probs = torch.softmax(logits, dim=-1)  # (N, V)
        entropy = lse - (probs * logits).sum(-1)  # (N,)
        ctx.save_for_backward(logits, targets, lse, entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor, g_ent: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse, entropy = ctx.saved_tensors
        return logits_grad_(logits - lse.unsqueeze(1), targets, entropy, g_logp, g_ent), None


def logits_grad_(
    log_p: torch.Tensor,
    targets: torch.Tensor,
    entropy: torch.Tensor,
    g_logp: torch.Tensor,
    g_ent: torch.Tensor,
    hit: torch.Tensor | None = None,
) -> torch.Tensor:
    """The gradient (N, V) of token log-probs and entropies with respect to the logits, given their upstream
    gradients (N,) and ``log_p = logits - logsumexp(logits)`` (N, V), which it overwrites and returns.

    ``log_p`` may hold a slice of the vocabulary (``logsumexp`` still over all of it): then ``targets`` index into
    the slice and ``hit`` (N,) bool marks the rows whose target lies in it."""
    probs = torch.exp(log_p)  # (N, V)
    # -p * (g_logp + g_H * (log p + H)), built in place in log_p
    log_p.add_(entropy.unsqueeze(1)).mul_(g_ent.unsqueeze(1)).add_(g_logp.unsqueeze(1)).mul_(probs).neg_()
    picked = g_logp if hit is None else g_logp * hit
    return log_p.scatter_add_(1, targets.unsqueeze(1), picked.unsqueeze(1))


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (N,) of ``targets`` (N,) under ``logits`` (N, V), and the entropies (N,) when asked.

    Never materialises a full (N, V) ``log_softmax``: the log-prob is ``z_y - logsumexp(z)``; with the entropy, a
    fused autograd function computes both and their gradient with one (N, V) temporary.
    """
    if with_entropy:
        logp, entropy = _LogprobEntropy.apply(logits, targets)  # type: ignore[no-untyped-call]  # untyped in torch
        return logp, entropy
    lse = torch.logsumexp(logits, dim=-1)  # (N,)
    return logits.gather(1, targets.unsqueeze(1)).squeeze(1) - lse, None
