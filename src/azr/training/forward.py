"""The decoder's forward pass over a micro-batch, with its shared prompt prefix run once.

A micro-batch whose sequences share a prefix (:mod:`azr.prefix`) runs the prefix once with batch 1, repeats its
keys and values for every member, and runs only the members' remaining tokens against them: the same hidden
states and gradients as the full sequences, for fewer tokens (the autograd graph goes through the cache).
"""

from __future__ import annotations

from typing import Any, cast

import torch

from azr.hfcompat import with_cache
from azr.training.batching import MicroBatch


def hidden_states(decoder: Any, mb: MicroBatch) -> torch.Tensor:
    """Last hidden states (b, L, H) of ``mb.input_ids``, after the shared prefix when there is one."""
    if mb.prefix_ids is None:
        out = decoder(input_ids=mb.input_ids, attention_mask=mb.attention_mask)
        return cast(torch.Tensor, out.last_hidden_state)
    b, width = mb.input_ids.shape
    skip = mb.prefix_ids.shape[1]
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=decoder.config)  # filled by the prefix pass; keeps its autograd graph
    decoder(input_ids=mb.prefix_ids, **with_cache(decoder, cache))
    cache.batch_repeat_interleave(b)
    ones = mb.attention_mask.new_ones((b, skip))
    positions = torch.arange(skip, skip + width, device=mb.input_ids.device).expand(b, width)  # (b, L)
    out = decoder(
        input_ids=mb.input_ids,
        attention_mask=torch.cat([ones, mb.attention_mask], dim=1),  # (b, P + L)
        position_ids=positions,
        **with_cache(decoder, cache),
    )
    return cast(torch.Tensor, out.last_hidden_state)
