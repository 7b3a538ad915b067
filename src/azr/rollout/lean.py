"""One decode step of a Llama decoder over the prompt store, without transformers' per-module machinery.

A decode step runs one token per row through every layer: a few hundred operations on tensors of a dozen rows, so
the time goes to the Python and dispatch work around them as much as to the arithmetic. Measured on the 2-core
AVX512-BF16 box (2026-12-06, SmolLM2-135M, bf16, 12 rows, attention left out): transformers' forward took 38.7 ms
per step, of which its 211 linear layers 19.6 ms. :func:`decode_logits` computes the same step with the same modules'
weights, fewer operations and no per-module calls, and hands attention to the prompt store (which writes the step's
keys/values into the rows' tails).

It computes what ``LlamaForCausalLM`` computes (RMSNorm in fp32 and back, rotary embeddings from the model's own
rotary module, the gated MLP with the model's activation), which tests check against transformers' forward. Only for
the decoder layer classes in :data:`LAYERS`, whose structure this mirrors; anything else decodes through
transformers (:func:`supports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from azr.rollout.prompt_store import PromptStore

__all__ = ["LAYERS", "decode_logits", "supports"]

LAYERS = frozenset({"LlamaDecoderLayer"})


def supports(model: Any) -> bool:
    """Whether :func:`decode_logits` mirrors ``model``: a Llama decoder without query/key norms or a sliding window,
    with a gated MLP and plain RMSNorms."""
    decoder = getattr(model, "model", None)
    layers = getattr(decoder, "layers", None)
    if decoder is None or not layers or not hasattr(model, "lm_head"):
        return False
    for layer in layers:
        if type(layer).__name__ not in LAYERS:
            return False
        attn, mlp = layer.self_attn, layer.mlp
        if any(hasattr(attn, name) for name in ("q_norm", "k_norm")) or getattr(attn, "sliding_window", None):
            return False
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return False
    norms = [decoder.norm] + [
        n for layer in layers for n in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    return all(type(n).__name__ == "LlamaRMSNorm" for n in norms)


def _rms(x: torch.Tensor, norm: Any) -> torch.Tensor:
    """``LlamaRMSNorm``: normalise in fp32, back to the input's dtype, times the weight."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of ``x`` (B, heads, d) with ``cos``/``sin`` (B, 1, d)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


def decode_logits(
    model: Any, tokens: torch.Tensor, positions: torch.Tensor, store: PromptStore
) -> torch.Tensor:
    """Logits (B, V) of one decode step: ``tokens`` (B,) at ``positions`` (B,), attending through ``store`` (the
    caller advances it)."""
    decoder = model.model
    hidden = decoder.embed_tokens(tokens)  # (B, H)
    cos, sin = decoder.rotary_emb(hidden[:, None], positions[:, None])  # (B, 1, d) each
    b = hidden.shape[0]
    for i, layer in enumerate(decoder.layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = _rms(hidden, layer.input_layernorm)
        d = attn.head_dim
        q = _rotate(attn.q_proj(x).view(b, -1, d), cos, sin)  # (B, heads, d)
        k = _rotate(attn.k_proj(x).view(b, -1, d), cos, sin)  # (B, kv_heads, d)
        v = attn.v_proj(x).view(b, -1, d)
        out = store.attend(i, q[:, :, None], k[:, :, None], v[:, :, None], attn.scaling)  # (B, 1, heads, d)
        hidden = hidden + attn.o_proj(out.reshape(b, -1))
        x = _rms(hidden, layer.post_attention_layernorm)
        hidden = hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))
    return model.lm_head(_rms(hidden, decoder.norm))
