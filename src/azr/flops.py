"""The arithmetic a step needs: floating-point operations counted from a decoder's shapes and the step's tokens.

Pure functions, no model and no torch. A forward pass over ``tokens`` positions of a Llama-style decoder costs
``2 * P * tokens`` for the matrix products with the layers' weights (``P``: the attention and MLP weights, see
:meth:`Shape.matmul_params`), ``4 * layers * heads * head_dim * context`` for attention scores and their weighted
sum (``context``: the positions each token attends to, summed over tokens) and ``2 * hidden * vocab`` for each
position whose logits are computed. A backward pass costs twice its forward. Normalisations, activations and the
optimizer are left out: they are memory-bound and small next to the products.

:func:`generation_work` and :func:`update_work` count what a self-play step must compute at the least: a prompt
prefix shared by several prompts once (as :mod:`azr.prefix` groups them), no padding, and logits only where a token
is sampled or trained. ``bench/step.py`` divides these FLOPs by the machine's measured matrix-product throughput to
get the step's compute floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from azr.prefix import prefix_groups

__all__ = ["Shape", "Work", "generation_work", "update_work"]


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that set its cost."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        """From a ``transformers`` config (Llama, Qwen2, Mistral and alike)."""
        heads = config.num_attention_heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
        )

    def matmul_params(self) -> int:
        """Weights multiplied once per token: q, k, v, o projections and the gated MLP, in every layer."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attn + 3 * self.hidden * self.intermediate)

    def forward_flops(self, work: Work) -> float:
        """FLOPs of one forward pass over ``work``."""
        products = 2.0 * self.matmul_params() * work.tokens
        attention = 4.0 * self.layers * self.heads * self.head_dim * work.context
        return products + attention + 2.0 * self.hidden * self.vocab * work.logit_tokens


@dataclass(frozen=True)
class Work:
    """Positions run through the decoder, attention context summed over them, positions with logits."""

    tokens: int = 0
    context: int = 0
    logit_tokens: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.tokens + other.tokens,
            self.context + other.context,
            self.logit_tokens + other.logit_tokens,
        )


def _span(start: int, end: int) -> int:
    """Sum of the contexts of positions ``start .. end - 1`` (position ``i`` attends to ``i + 1`` positions)."""
    return (end * (end + 1) - start * (start + 1)) // 2


def _shared(prompts: Sequence[Sequence[int]], tails: Sequence[int], logits: Sequence[int]) -> Work:
    """Each prompt followed by ``tails[r]`` more positions, a prefix shared by a group of prompts run once."""
    work = Work()
    for group in prefix_groups(prompts, keep=1):
        prefix = group.prefix_len
        work += Work(prefix, _span(0, prefix), 0)
        for m in group.members:
            end = len(prompts[m]) + tails[m]
            work += Work(end - prefix, _span(prefix, end), logits[m])
    return work


def generation_work(prompts: Sequence[Sequence[int]], completions: Sequence[int]) -> tuple[Work, Work]:
    """(prefill, decode) work of generating ``completions[r]`` tokens after prompt ``prompts[r]``, per row.

    Prefill runs each distinct prompt once, a prefix shared by a group of them once, and keeps the logits of the
    last position; decoding runs every generated token but the first (sampled from the prefill's logits)."""
    distinct = list(dict.fromkeys(tuple(p) for p in prompts))
    prefill = _shared(distinct, [0] * len(distinct), [1] * len(distinct))
    decode = Work()
    for prompt, n in zip(prompts, completions, strict=True):
        steps = max(n - 1, 0)
        decode += Work(steps, _span(len(prompt), len(prompt) + steps), steps)
    return prefill, decode


def update_work(prompts: Sequence[Sequence[int]], replies: Sequence[int]) -> Work:
    """One forward pass over each prompt and its ``replies[r]`` tokens, with logits for the reply tokens only and
    a prefix shared by a group of prompts run once (as the trainer's ``share_prefix`` does)."""
    return _shared(prompts, replies, replies)
