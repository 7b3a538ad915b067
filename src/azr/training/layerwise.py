"""A decoder's forward pass run layer by layer under activation checkpointing, shared prefix included.

The trainer runs a micro-batch's shared prompt prefix once and attends every member to it (``azr.prefix``). HF's own
gradient checkpointing cannot keep a KV cache (the backward replay would write it twice), so with it on every member
recomputed the whole prefix. This module drives the layers itself instead:

- **prefix pass** (batch 1, P tokens): each layer runs inside ``torch.utils.checkpoint`` with a fresh one-layer cache
  and returns its output *and* the keys/values it wrote; only the layer's input and those keys/values are kept;
- **member pass** (batch b, L tokens): each layer runs checkpointed with a fresh cache preloaded with the prefix's
  keys/values of that layer (expanded to b rows, not copied), so members attend to the prefix exactly as with a
  cache.

The replay in backward rebuilds its own cache, so nothing is written twice and the gradients equal those of the plain
forward pass. Kept for backward: one (b, L, H) input per layer plus the prefix's keys/values, instead of every
intermediate of every layer (about 1/16th for SmolLM2's shapes), and the fused attention kernel's output and
log-sum-exps (selective checkpointing, :data:`SAVE_ATTENTION`): the replay runs the layer without its attention, which
was ~6 s of a 76 s default CPU update (+~85 MB at its peak, 2026-12-06). With sdpa on a CPU the member pass's
attention is :mod:`azr.kernels.prefix_attention`'s split (:data:`SPLIT_ATTENTION`): the prefix part dense over all members'
queries at once, the own part causal, no mask, no copy of the prefix per member. Where azr's bf16 attention kernels
apply (:func:`azr.kernels.prefix_attention.kernels_apply`), the prefix pass and members without a prefix run causal attention
through :func:`azr.kernels.prefix_attention.attention` too; the narrow key/value projections' outputs are kept as well
(:data:`SAVE_KV_PROJECTIONS`).

**Backward in stages.** A weight used twice in one backward pass gets its gradient added to ``.grad`` only once both
uses have delivered theirs; until then the first waits in autograd's buffers. Each layer's weights serve the prefix pass
and the member pass, whose layers run backward last; the tied embedding serves the LM head (first in backward) and the
inputs (last). In one pass the member pass's gradient of every weight waited for the prefix pass's: a whole model's worth
of fp32 gradients on top of ``.grad`` (0.3 GiB of the default CPU step's 3.8 GiB peak). :class:`StagedBackward` cuts
the graph where the uses meet, at the prefix's keys/values and at the decoder's output: the caller's ``backward()`` runs
the LM head alone, :meth:`StagedBackward.run` then the members, then the prefix, each weight's gradient going into
``.grad`` as soon as its stage computes it. Same gradients, summed in another order. Not under FSDP, whose
reduce-scatters run from hooks on a single backward pass.

Supported: decoders with ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` whose attention writes through
``cache.update(key, value, layer_idx, ...)`` (Llama, Qwen2, Mistral, SmolLM), with sdpa or eager attention.
:func:`supports` says whether a decoder qualifies.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from azr.hfcompat import attention_implementation
from azr.kernels.prefix_attention import CAUSAL_ATTENTION as _PLAIN
from azr.kernels.prefix_attention import OP as prefix_attention_op
from azr.kernels.prefix_attention import PLAIN_OP as plain_attention_op
from azr.kernels.prefix_attention import SPLIT_ATTENTION as _SPLIT
from azr.kernels.prefix_attention import kernels_apply
from azr.kernels.prefix_attention import supported as split_supported

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = ["StagedBackward", "checkpointed_hidden", "kept_kv_width", "supports"]


class StagedBackward:
    """A backward pass cut into stages at given tensors: the newest cut's graph runs first (module docstring)."""

    def __init__(self) -> None:
        self._groups: list[list[tuple[torch.Tensor, torch.Tensor]]] = []  # (tensor, the leaf standing for it)

    def cut(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Leaves with the values of ``tensors``; :meth:`run` later sends their gradients into ``tensors``' graph,
        all of them in one backward pass (a stage)."""
        leaves = [t.detach().requires_grad_() if t.requires_grad else t for t in tensors]
        self._groups.append([(t, leaf) for t, leaf in zip(tensors, leaves, strict=True) if leaf is not t])
        return leaves

    def run(self) -> None:
        """The stages, newest cut first, each with the gradients its leaves received from the stages before."""
        groups, self._groups = self._groups, []
        while groups:
            pairs = [(t, leaf.grad) for t, leaf in groups.pop() if leaf.grad is not None]
            if pairs:
                torch.autograd.backward([t for t, _ in pairs], [grad for _, grad in pairs])


class _LayerCache:
    """The slice of the ``Cache`` API one attention layer uses: ``update`` appends to an optional preloaded prefix
    (``split``: returns the layer's own keys/values only, the attention reads the prefix itself)."""

    def __init__(
        self,
        prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
        rows: int = 1,
        split: bool = False,
        plain: bool = False,
    ) -> None:
        self.prefix = prefix
        self.rows = rows
        self.split = split
        self.plain = (
            plain  # causal attention without a prefix or mask, through azr.kernels.prefix_attention.attention
        )
        self.written: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.written = (key, value)  # (b, kv_heads, L, d) each
        if self.prefix is None or self.split:
            return key, value
        pk, pv = (t.expand(self.rows, -1, -1, -1) for t in self.prefix)  # (b, kv_heads, P, d), no copy
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.prefix is None else self.prefix[0].shape[2]


def supports(decoder: Any) -> bool:
    """True when :func:`checkpointed_hidden` can drive ``decoder`` (see the module docstring)."""
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if not all(hasattr(decoder, name) for name in needed):
        return False
    impl = getattr(decoder.config, "_attn_implementation", None) or "eager"
    try:
        _cache_name(type(decoder.layers[0]))
    except StopIteration:
        return False
    return impl in ("sdpa", "eager")


def _mask(keep: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """(b, 1, L, K) mask from a bool ``keep``: bool for sdpa, additive for eager."""
    if impl == "sdpa":
        return keep
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(
        ~keep, torch.finfo(dtype).min
    )


def _keep(attention_mask: torch.Tensor, prefix_len: int) -> torch.Tensor:
    """(b, 1, L, P + L) bool: member token i sees the whole prefix, and its own non-padding tokens up to i."""
    b, width = attention_mask.shape
    causal = torch.ones(width, width, dtype=torch.bool, device=attention_mask.device).tril()  # (L, L)
    own = causal[None] & attention_mask.bool()[:, None, :]  # (b, L, L)
    seen = torch.ones(b, width, prefix_len, dtype=torch.bool, device=attention_mask.device)  # (b, L, P)
    return torch.cat([seen, own], dim=2)[:, None]


_CACHE_NAMES: dict[type[torch.nn.Module], str] = {}


def _cache_name(cls: type[torch.nn.Module]) -> str:
    """The decoder layer's KV-cache argument: renamed twice across transformers versions."""
    if cls not in _CACHE_NAMES:
        params = inspect.signature(cls.forward).parameters
        names = ("cache", "past_key_values", "past_key_value")
        _CACHE_NAMES[cls] = next(name for name in names if name in params)
    return _CACHE_NAMES[cls]


def _run_layer(
    layer: Any,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    cache: _LayerCache,
) -> torch.Tensor:
    kwargs = {_cache_name(type(layer)): cache, "position_embeddings": (cos, sin)}
    if cache.split:
        with attention_implementation(layer.self_attn.config, _SPLIT):
            out = layer(hidden, attention_mask=None, azr_prefix=cache.prefix, **kwargs)
    elif cache.plain:
        with attention_implementation(layer.self_attn.config, _PLAIN):
            out = layer(hidden, attention_mask=None, **kwargs)
    else:
        out = layer(hidden, attention_mask=mask, **kwargs)
    hidden_out: torch.Tensor = out[0] if isinstance(out, tuple) else out
    return hidden_out


def _prefix_layer(
    layer: Any,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    plain: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cache = _LayerCache(plain=plain)
    out = _run_layer(layer, hidden, mask, cos, sin, cache)
    assert cache.written is not None, "the attention layer did not write its keys/values through cache.update"
    return out, *cache.written


def _member_layer(
    layer: Any,
    hidden: torch.Tensor,
    key: torch.Tensor | None,
    value: torch.Tensor | None,
    mask: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    split: bool = False,
    plain: bool = False,
) -> torch.Tensor:
    prefix = None if key is None or value is None else (key, value)
    cache = _LayerCache(
        prefix, rows=hidden.shape[0], split=split and prefix is not None, plain=plain and prefix is None
    )
    return _run_layer(layer, hidden, mask, cos, sin, cache)


# Fused attention kernels whose outputs the checkpoint keeps instead of running them again in backward.
_ATTENTION_OPS = frozenset(
    getattr(getattr(torch.ops.aten, name, None), "default", None)
    for name in (
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
) - {None} | {prefix_attention_op, plain_attention_op}
SAVE_ATTENTION = True
# Members attend to the prefix and to themselves in two kernel calls (azr.kernels.prefix_attention), sdpa on a CPU.
SPLIT_ATTENTION = True
# Keep the key/value projections' outputs too when grouped-query attention makes them narrow (SmolLM2: 576 -> 192):
# the most recompute per byte kept (12.5% of a layer's products for 768 bytes a token). The recompute stops at the
# last tensor the backward needs, so the MLP's down projection never runs again anyway.
SAVE_KV_PROJECTIONS = True
_MM = torch.ops.aten.mm.default


def kv_projection_shape(layer: Any) -> tuple[int, int] | None:
    """(inner, output) width of a layer's key/value projection products when the checkpoint keeps them: narrower
    than their input (grouped-query attention) and the same for keys and values; else None."""
    attn = getattr(layer, "self_attn", None)
    k, v = getattr(attn, "k_proj", None), getattr(attn, "v_proj", None)
    if not SAVE_KV_PROJECTIONS or not isinstance(k, torch.nn.Linear) or not isinstance(v, torch.nn.Linear):
        return None
    shape = (k.in_features, k.out_features)
    return shape if shape == (v.in_features, v.out_features) and 2 * shape[1] <= shape[0] else None


def kept_kv_width(config: Any) -> int:
    """Output width per token of the key/value projections a layer keeps (for the memory estimate)."""
    if not SAVE_KV_PROJECTIONS:
        return 0
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads) * int(
        getattr(config, "head_dim", None) or hidden // heads
    )
    return 2 * kv if 2 * kv <= hidden else 0


def _save_policy(
    kv_shape: tuple[int, int] | None, ctx: Any, op: Any, *args: Any, **kwargs: Any
) -> CheckpointPolicy:
    if op in _ATTENTION_OPS:
        return CheckpointPolicy.MUST_SAVE
    if kv_shape is not None and op is _MM and (args[0].shape[1], args[1].shape[1]) == kv_shape:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _checkpoint(fn: Any, layer: Any, *args: Any) -> Any:
    """``fn(layer, *args)`` checkpointed; with :data:`SAVE_ATTENTION`, the attention kernel's outputs are kept rather
    than recomputed (selective checkpointing), and with :data:`SAVE_KV_PROJECTIONS` the narrow key/value
    projections' outputs: the recompute in backward is the layer minus those, for one (b, heads, L, d) output and
    its log-sum-exps per layer, plus (b, L, 2 * kv_heads * d) projections."""
    if not SAVE_ATTENTION:
        return checkpoint(fn, layer, *args, use_reentrant=False)
    policy = functools.partial(_save_policy, kv_projection_shape(layer))
    context = functools.partial(create_selective_checkpoint_contexts, policy)
    return checkpoint(fn, layer, *args, use_reentrant=False, context_fn=context)


def checkpointed_hidden(
    decoder: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prefix_ids: torch.Tensor | None,
    stages: StagedBackward | None = None,
) -> torch.Tensor:
    """Last hidden states (b, L, H) of ``input_ids`` (right-padded, ``attention_mask`` (b, L)) after the shared
    ``prefix_ids`` (1, P) when given; equal to the plain forward pass, with activations recomputed in backward.

    With ``stages``, the prefix's keys/values reach the members cut from the prefix's graph: the caller runs
    ``stages.run()`` after its own ``backward()`` to finish the gradient."""
    impl = getattr(decoder.config, "_attn_implementation", None) or "eager"
    layers = list(decoder.layers)[: decoder.config.num_hidden_layers]
    device = input_ids.device
    # Causal attention without a mask runs through azr's kernels where they apply (bf16 on an AVX512-BF16 CPU).
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    plain = impl == "sdpa" and AttentionInterface is not None
    config = decoder.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    plain = plain and kernels_apply(device, dtype or decoder.embed_tokens.weight.dtype, head_dim)
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer
    skip = 0
    if prefix_ids is not None:
        skip = prefix_ids.shape[1]
        hidden = decoder.embed_tokens(prefix_ids)  # (1, P, H)
        cos, sin = decoder.rotary_emb(hidden, torch.arange(skip, device=device)[None])
        keep = torch.ones(skip, skip, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, P, P)
        # sdpa with no mask runs causal (is_causal): its kernel skips the blocks above the diagonal, which an
        # explicit mask makes it compute. Same result.
        mask = None if impl == "sdpa" else _mask(keep, impl, hidden.dtype)
        for layer in layers:
            hidden, key, value = _checkpoint(_prefix_layer, layer, hidden, mask, cos, sin, plain)
            prefix_kv.append((key, value))
        if stages is not None and prefix_kv:
            flat = stages.cut([t for kv in prefix_kv for t in kv])
            prefix_kv = list(zip(flat[::2], flat[1::2], strict=True))
    b, width = input_ids.shape
    hidden = decoder.embed_tokens(input_ids)  # (b, L, H)
    positions = torch.arange(skip, skip + width, device=device).expand(b, width)  # (b, L)
    cos, sin = decoder.rotary_emb(hidden, positions)
    # Members are right-padded: with no prefix, causal attention alone never lets a real token see a pad (only the
    # pads' own outputs change, and nothing reads them), so sdpa runs causal there too. With a prefix, sdpa on a CPU
    # runs the split attention (azr.kernels.prefix_attention), which needs no mask either: SPLIT_ATTENTION.
    split = SPLIT_ATTENTION and impl == "sdpa" and skip > 0 and AttentionInterface is not None
    split = split and split_supported(hidden)
    plain_causal = impl == "sdpa" and not skip
    mask = None if plain_causal or split else _mask(_keep(attention_mask, skip), impl, hidden.dtype)
    for i, layer in enumerate(layers):
        key, value = prefix_kv[i] if prefix_kv else (None, None)
        hidden = _checkpoint(
            _member_layer, layer, hidden, key, value, mask, cos, sin, split, plain and plain_causal
        )
    normed: torch.Tensor = decoder.norm(hidden)
    return normed
