"""A prompt group's prefill for the prompt store: the shared prefix once, then the members' rests attending to it.

The plain way (:func:`masked_group`) copies the prefix's keys/values to every member and runs the rests
left-padded through one masked attention call per layer, which computes the masked and padded scores too. Here the
rests are right-padded and each layer's attention is :func:`azr.kernels.prefix_attention.prefix_attention`: all members'
queries against the one prefix (dense, no mask, no copy) and each member causally against its own tokens (a real token
never sees a pad to its right). Both run on azr's bf16 kernels where they apply (:mod:`azr.kernels`), else on
PyTorch's flash kernel. The prefix itself runs as causal attention without a mask (:data:`CAUSAL_ATTENTION`).

Only for Llama-style decoders that :func:`azr.rollout.lean.supports` (no logit soft-capping or other LM-head
extras: the last logits are the LM head of the last real position) with sdpa attention on a CPU; :func:`applies`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from azr.hfcompat import attention_implementation, with_cache
from azr.kernels.prefix_attention import CAUSAL_ATTENTION, SPLIT_ATTENTION, kernels_apply, supported
from azr.rollout import lean
from azr.rollout.kvcache import DynamicCache

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = ["SPLIT", "applies", "group", "masked_group", "padded", "prefix_pass_attention"]

SPLIT = True  # False: masked_group for every group
KV = tuple[torch.Tensor, torch.Tensor]


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def prefix_pass_attention(decoder: Any) -> Any:
    """A context for running a shared prefix (one row, no padding) through ``decoder``: causal attention on azr's
    kernels where they apply, else nothing changes."""
    config = decoder.config
    weight = decoder.get_input_embeddings().weight
    if config._attn_implementation != "sdpa" or not kernels_apply(
        weight.device, weight.dtype, _head_dim(config)
    ):
        return contextlib.nullcontext()
    return attention_implementation(config, CAUSAL_ATTENTION)


def applies(decoder: Any) -> bool:
    """Whether :func:`group` can prefill for ``decoder`` (see the module docstring)."""
    weight = decoder.get_input_embeddings().weight
    return (
        SPLIT
        and AttentionInterface is not None
        and decoder.config._attn_implementation == "sdpa"
        and lean.supports(decoder)
        and supported(weight)
    )


@torch.inference_mode()
def group(
    decoder: Any, prompts: list[list[int]], prefix_len: int, pad_id: int
) -> tuple[torch.Tensor, list[KV], list[list[KV]]]:
    """Prefill prompts sharing their first ``prefix_len`` tokens (``prefix_len`` >= 1, every rest >= 1 token): the
    last logits (g, V), the prefix's keys/values per layer (kv_heads, prefix_len, d) and each member's rest's per
    layer."""
    device = decoder.get_input_embeddings().weight.device
    base, lm_head = decoder.model, decoder.lm_head
    prefix_cache = DynamicCache(config=decoder.config)
    with prefix_pass_attention(decoder):
        base(
            input_ids=torch.tensor([prompts[0][:prefix_len]], device=device), **with_cache(base, prefix_cache)
        )
    prefix_kv = [
        (layer.keys[:, :, :prefix_len], layer.values[:, :, :prefix_len]) for layer in prefix_cache.layers
    ]  # (1, kv, P, d)
    rests = [p[prefix_len:] for p in prompts]
    width = max(len(r) for r in rests)
    ids = padded(rests, width, pad_id, left=False).to(device)
    positions = torch.arange(prefix_len, prefix_len + width, device=device).expand(len(rests), width)
    rest_cache = DynamicCache(config=decoder.config)
    with attention_implementation(decoder.config, SPLIT_ATTENTION):
        hidden = base(
            input_ids=ids, position_ids=positions, azr_prefix_layers=prefix_kv, **with_cache(base, rest_cache)
        ).last_hidden_state  # (g, w, H)
    last = torch.tensor([len(r) - 1 for r in rests], device=device)
    logits = lm_head(hidden[torch.arange(len(rests), device=device), last])  # (g, V)
    own = [
        [
            (layer.keys[row, :, : len(r)].clone(), layer.values[row, :, : len(r)].clone())
            for row, r in enumerate(rests)
        ]
        for layer in rest_cache.layers
    ]
    return logits, [(k[0].clone(), v[0].clone()) for k, v in prefix_kv], own


@torch.inference_mode()
def masked_group(
    decoder: Any, prompts: list[list[int]], prefix_len: int, pad_id: int
) -> tuple[torch.Tensor, list[KV], list[list[KV]]]:
    """:func:`group` for any decoder (``prefix_len`` may be 0): the prefix once, its keys/values copied to every
    member, then the rests left-padded through one masked attention call per layer."""
    device = decoder.get_input_embeddings().weight.device
    cache = DynamicCache(config=decoder.config)
    if prefix_len:
        with prefix_pass_attention(decoder):
            decoder(
                input_ids=torch.tensor([prompts[0][:prefix_len]], device=device),
                **with_cache(decoder, cache),
                logits_to_keep=1,
            )
        cache.batch_repeat_interleave(len(prompts))
    rests = [p[prefix_len:] for p in prompts]
    width = max(len(r) for r in rests)
    mask = torch.zeros((len(rests), prefix_len + width), dtype=torch.long)  # (g, P + w)
    mask[:, :prefix_len] = 1
    for row, rest in enumerate(rests):
        mask[row, prefix_len + width - len(rest) :] = 1
    mask = mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix_len:]  # (g, w)
    out = decoder(
        input_ids=padded(rests, width, pad_id, left=True).to(device),
        attention_mask=mask,
        position_ids=positions,
        **with_cache(decoder, cache),
        logits_to_keep=1,
    )
    span = prefix_len + width
    prefix_kv = [
        (layer.keys[0, :, :prefix_len].clone(), layer.values[0, :, :prefix_len].clone())
        for layer in cache.layers
    ]
    own = [
        [
            (layer.keys[row, :, span - len(r) :].clone(), layer.values[row, :, span - len(r) :].clone())
            for row, r in enumerate(rests)
        ]
        for layer in cache.layers
    ]
    return out.logits[:, -1], prefix_kv, own


def padded(rows: list[list[int]], width: int, pad_id: int, left: bool) -> torch.Tensor:
    """(len(rows), width) token ids, each row padded with ``pad_id`` on the left or the right."""
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            start = width - len(row) if left else 0
            ids[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
    return ids
