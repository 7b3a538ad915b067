"""The LM head's statistics for the update: log-probs of the reply tokens and their entropies, at their sampling
temperatures, without the (tokens x vocabulary) logits when the trainer checkpoints.

:func:`head_stats` runs the head whole, or (with ``chunk > 0``, under activation checkpointing) in tiles of ``chunk``
tokens by ``VOCAB_BLOCK`` vocabulary entries recomputed in backward (:class:`_ChunkedHead`): one tile of logits and one
block of the weight in the autocast dtype exist at a time, in forward and in backward (where one block's logit
gradients for all tokens, in the autocast dtype, feed two products). Split from
:mod:`azr.training.layerwise`, which runs the decoder's layers the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from azr.algo.loss import logits_grad_, token_logprobs

__all__ = ["VOCAB_BLOCK", "head_stats"]

VOCAB_BLOCK = 4096  # rows of the LM head's weight one tile of the chunked head covers


def head_stats(
    head: Any,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperatures: torch.Tensor | None,
    with_entropy: bool,
    chunk: int = 0,
    grad_in_place: bool = False,
    block: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (n,) of ``targets`` under ``softmax(head(hidden) / T)``, and entropies (n,) when asked, in fp32.

    With ``chunk > 0`` no (n, V) logits ever exist, in forward or in backward. A bias-free ``nn.Linear`` head (the
    usual tied LM head) runs through :class:`_ChunkedHead`, in tiles of ``chunk`` rows by ``VOCAB_BLOCK`` vocabulary
    entries; any other head runs ``chunk`` rows at a time checkpointed, which makes a whole (V, H) gradient per
    chunk. ``block``: vocabulary entries per tile (default :data:`VOCAB_BLOCK`).

    ``grad_in_place``: the chunked head adds its weight's gradient straight into ``weight.grad`` (creating it when
    None) instead of handing autograd a whole (V, H) fp32 gradient to add there (113 MB for SmolLM2-135M, at the
    update's memory peak). Only for a leaf weight whose gradient nothing hooks: azr's trainer without FSDP, which
    sums data-parallel gradients itself after the backward passes."""
    n = hidden.shape[0]
    if chunk <= 0 or n == 0:
        return _head_stats(head, hidden, targets, temperatures, with_entropy)
    if type(head) is torch.nn.Linear and head.bias is None:
        dtype = (
            torch.get_autocast_dtype(hidden.device.type)
            if torch.is_autocast_enabled(hidden.device.type)
            else None
        )
        if int(targets.max()) >= head.weight.shape[0] or int(targets.min()) < 0:
            raise ValueError(
                f"a reply token id is outside the LM head's vocabulary of {head.weight.shape[0]}: "
                "the tokenizer and the model do not match"
            )
        in_place = grad_in_place and head.weight.is_leaf
        logp, ent = _ChunkedHead.apply(
            hidden,
            head.weight,
            targets,
            temperatures,
            with_entropy,
            chunk,
            dtype,
            in_place,
            block or VOCAB_BLOCK,
        )
        return logp, (ent if with_entropy else None)
    parts = []
    for rows in _slices(n, chunk):
        temps = None if temperatures is None else temperatures[rows]
        parts.append(
            checkpoint(
                _head_stats, head, hidden[rows], targets[rows], temps, with_entropy, use_reentrant=False
            )
        )
    logp = torch.cat([p[0] for p in parts])
    return logp, (torch.cat([p[1] for p in parts]) if with_entropy else None)


class _ChunkedHead(torch.autograd.Function):
    """Log-probs and entropies of a bias-free linear head, one (``chunk`` rows, ``VOCAB_BLOCK`` entries) tile of
    logits at a time, recomputed in backward.

    Forward keeps a running log-sum-exp per row across the vocabulary blocks (and the running sum of ``p * z`` for
    the entropy, ``H = lse - E_p[z]``); backward rebuilds each tile's probabilities from the saved log-sum-exps and
    entropies. Only one block of the weight is cast to ``dtype`` at a time (the product in ``dtype`` when given, as
    autocast does; the statistics in fp32), and each block of the weight's gradient is summed in fp32 in place."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        temperatures: torch.Tensor | None,
        with_entropy: bool,
        chunk: int,
        dtype: torch.dtype | None,
        grad_in_place: bool = False,
        block_size: int = VOCAB_BLOCK,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = hidden.shape[0]
        h = hidden if dtype is None else hidden.to(dtype)
        stats = _Running(n, hidden.device, with_entropy)
        for block in _slices(weight.shape[0], block_size):
            w = weight[block] if dtype is None else weight[block].to(dtype)  # (b, H)
            for rows in _slices(n, chunk):
                z = _tile_logits(h[rows], w, temperatures, rows)  # (c, b) fp32
                stats.add(z, rows, *_in_block(targets[rows], block.start, z.shape[1]))
        lse, logp, entropy = stats.result()
        ctx.save_for_backward(hidden, weight, targets, temperatures, lse, entropy)
        ctx.chunk, ctx.dtype, ctx.weight, ctx.in_place = chunk, dtype, weight, grad_in_place
        ctx.block_size = block_size
        return logp, entropy

    @staticmethod
    def backward(ctx: Any, g_logp: torch.Tensor, g_ent: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, targets, temperatures, lse, entropy = ctx.saved_tensors
        n = hidden.shape[0]
        h = hidden if ctx.dtype is None else hidden.to(ctx.dtype)
        grad_hidden = torch.zeros(hidden.shape, device=hidden.device) if ctx.needs_input_grad[0] else None
        grad_weight = _weight_grad_buffer(ctx) if ctx.needs_input_grad[1] else None
        for block in _slices(weight.shape[0], ctx.block_size):
            w = weight[block] if ctx.dtype is None else weight[block].to(ctx.dtype)  # (b, H)
            # the gradient of the product's output for all rows of the block, in its dtype: one product each for
            # the hidden states' and the weight's gradients, with all n rows as the inner dimension of the latter
            dz = torch.empty(n, w.shape[0], dtype=w.dtype, device=w.device)  # (n, b)
            for rows in _slices(n, ctx.chunk):
                z = _tile_logits(h[rows], w, temperatures, rows)
                local, hit = _in_block(targets[rows], block.start, z.shape[1])
                log_p = z.sub_(lse[rows, None])  # (c, b)
                dz_rows = logits_grad_(log_p, local, entropy[rows], g_logp[rows], g_ent[rows], hit)
                if temperatures is not None:
                    dz_rows.div_(temperatures[rows])
                dz[rows] = dz_rows
            if grad_hidden is not None:
                grad_hidden += dz @ w
            if grad_weight is not None:
                grad_weight[block] += dz.T @ h
        if grad_hidden is not None:
            grad_hidden = grad_hidden.to(hidden.dtype)
        if ctx.in_place:
            grad_weight = None  # already in weight.grad
        return grad_hidden, grad_weight, None, None, None, None, None, None, None


def _weight_grad_buffer(ctx: Any) -> torch.Tensor:
    """Where the chunked head's backward sums its weight gradient: ``weight.grad`` itself when in place (zeros
    when it has none yet), else a fresh buffer for autograd."""
    weight = ctx.weight
    if not ctx.in_place:
        return torch.zeros_like(weight)
    if weight.grad is None:
        weight.grad = torch.zeros_like(weight)
    grad: torch.Tensor = weight.grad
    return grad


class _Running:
    """Per-row running statistics of logits seen one vocabulary block at a time: the maximum ``m``, ``s = sum
    exp(z - m)``, ``t = sum exp(z - m) * z`` (for the entropy) and the target's logit."""

    def __init__(self, n: int, device: torch.device, with_entropy: bool) -> None:
        self.m = torch.full((n,), float("-inf"), device=device)
        self.s = torch.zeros(n, device=device)
        self.t = torch.zeros(n, device=device) if with_entropy else None
        self.target = torch.zeros(n, device=device)

    def add(self, z: torch.Tensor, rows: slice, local: torch.Tensor, hit: torch.Tensor) -> None:
        """Fold in the logits ``z`` (c, b) of rows ``rows``; ``local``/``hit``: :func:`_in_block` of their targets."""
        m = torch.maximum(self.m[rows], z.amax(dim=1))
        scale = torch.exp(self.m[rows] - m)
        e = torch.exp(z - m[:, None])  # (c, b)
        self.s[rows] = self.s[rows] * scale + e.sum(dim=1)
        if self.t is not None:
            self.t[rows] = self.t[rows] * scale + e.mul_(z).sum(dim=1)
        self.m[rows] = m
        picked = z.gather(1, local[:, None])[:, 0]
        self.target[rows] = torch.where(hit, picked, self.target[rows])

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-sum-exps, target log-probs and entropies (zeros when not asked), each (n,)."""
        lse = self.m + torch.log(self.s)
        entropy = lse - self.t / self.s if self.t is not None else torch.zeros_like(lse)
        return lse, self.target - lse, entropy


def _in_block(targets: torch.Tensor, start: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each target's index in the vocabulary block ``[start, start + width)`` (clamped into it) and whether it lies
    there."""
    local = targets - start
    return local.clamp(0, width - 1), (local >= 0) & (local < width)


def _slices(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _tile_logits(
    hidden: torch.Tensor, weight: torch.Tensor, temperatures: torch.Tensor | None, rows: slice
) -> torch.Tensor:
    """fp32 logits (c, b) of ``hidden`` (c, H) against a block of the weight (b, H), in the weight's dtype, divided
    by their temperatures."""
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        logits = (hidden.to(weight.dtype) @ weight.T).float()
    return logits if temperatures is None else logits.div_(temperatures[rows])


def _head_stats(
    head: Any,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperatures: torch.Tensor | None,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = head(hidden).float()  # (n, V), under the caller's autocast
    with torch.autocast(device_type=logits.device.type, enabled=False):  # the statistics in fp32
        if temperatures is not None:
            # In place: the head's matmul does not keep its output for backward, so no second (n, V) buffer.
            logits = logits.div_(temperatures)
        return token_logprobs(logits, targets, with_entropy)


HEAD_CHUNK = 128  # reply tokens whose logits exist at once under gradient checkpointing, on a CPU
GPU_HEAD_TILE = (1024, 16384)  # (reply tokens, vocabulary entries) of one LM-head tile on a GPU


def head_tile(device: torch.device) -> tuple[int, int]:
    """(reply tokens, vocabulary entries) of one tile of the checkpointed LM head (:func:`head_stats`).
    Small on a CPU, where a tile of logits should stay in its caches; large on a GPU, where every tile costs a
    dozen kernel launches: an 8096-token reply over Qwen2.5's 152k vocabulary is ~2,400 tiles of 128 x 4096 and
    80 of 1024 x 16384 (64 MiB of fp32 logits)."""
    return (HEAD_CHUNK, VOCAB_BLOCK) if device.type == "cpu" else GPU_HEAD_TILE
