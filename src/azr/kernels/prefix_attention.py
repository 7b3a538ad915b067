"""Training attention of members after a shared prompt prefix, as two fused-kernel calls merged exactly.

In the trainer's member pass (:mod:`azr.training.layerwise`) each of ``b`` members (L tokens, right-padded) attends to the
shared prefix (P tokens) and causally to its own tokens. Done as one attention call that needs the prefix's keys/values
concatenated to every member's (b copies), repeated to every query head (grouped-query attention with a mask is not
fused) and a (b, 1, L, P + L) mask, whose masked upper triangle the kernel computes anyway. Here instead:

- **prefix part**: the queries of all members stacked as one sequence, ``(1, heads, b * L, d)``, against the
  prefix's keys/values ``(1, kv_heads, P, d)``: dense, no mask, the kv heads read natively, the prefix never copied;
- **own part**: each member against its own keys/values, causal without a mask, so the kernel skips the blocks
  above the diagonal.

The outputs are merged through the parts' log-sum-exps, ``o = w1 o1 + w2 o2`` with ``w_i = exp(lse_i - lse)``. The
backward calls the kernel's own backward for each part with the part's log-sum-exp, the *merged* output and the
gradient scaled by ``w_i``: the kernel computes ``dS = P_i (dO_i V^T - rowsum(dO_i * O))``, which with
``dO_i = w_i dO`` and ``P = w_i P_i`` is exactly the merged attention's ``P (dO V^T - rowsum(dO * O))``. Same
gradients as the single call up to float rounding (tests/test_layerwise.py).

CPU only (PyTorch's CPU flash kernel returns the log-sum-exps and takes them back in its backward);
:func:`supported` says when it applies.

**Kernels.** In bf16 on a CPU with AVX512-BF16 every part runs through azr's own attention kernels
(:mod:`azr.kernels`, ``attention.cpp``: forward and backward, grouped-query attention native) instead of PyTorch's
flash kernel, whose block products go through MKL's bf16 GEMM; on CPUs MKL does not tune for (AMD EPYC here) that
converts to fp32 first and the attention ran at 45-180 GFLOP/s against ~400 for the model's products. Measured on
the 2-core AVX512-BF16 EPYC (2026-12-06, one run), forward / backward: the prefix part (1744 queries x 753 keys, 9 x 64)
10.6 / 24.6 ms against 20.3 / 52.8, a member's own part (4 x 394, causal) 3.0 / 8.7 against 12.5 / 29.7, a prefix
pass (757, causal) 2.5 / 6.6 against 7.5 / 23.8; errors against an fp32 reference equal (output, query gradient) or
2-3x below (key/value gradients) the flash kernel's. :func:`attention` is the same for plain (causal or dense)
attention, the prefix pass's. ``USE_KERNELS = False`` keeps PyTorch's kernel.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = [
    "CAUSAL_ATTENTION",
    "OP",
    "PLAIN_OP",
    "SPLIT_ATTENTION",
    "attention",
    "autocast_dtype",
    "kernels_apply",
    "prefix_attention",
    "supported",
]

_ATEN = torch.ops.aten
_FORWARD = getattr(_ATEN, "_scaled_dot_product_flash_attention_for_cpu", None)
_BACKWARD = getattr(_ATEN, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


USE_KERNELS = True  # False: PyTorch's flash kernel even where azr's kernels apply


def _kernels(device: torch.device, dtype: torch.dtype, head_dim: int) -> Any | None:
    """azr's compiled kernels where they run (bf16, heads a multiple of 32, a CPU build with AVX512-BF16)."""
    if not USE_KERNELS or device.type != "cpu" or dtype != torch.bfloat16 or head_dim % 32:
        return None
    from azr.kernels import native_kernels

    module = native_kernels()
    return module if module is not None and module.bf16_attention_available() else None


def kernels_apply(device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """Whether azr's own attention kernels run for queries on ``device`` in ``dtype`` with heads of ``head_dim``
    (bf16, a multiple of 32, on a CPU whose build has AVX512-BF16)."""
    return _kernels(device, dtype, head_dim) is not None


def _forward(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, log-sum-exps) of one attention call, azr's kernel where it applies, else PyTorch's flash kernel."""
    kernels = _kernels(query.device, query.dtype, query.shape[-1])
    if kernels is not None:
        out, lse = kernels.bf16_attention_forward(
            query.contiguous(), key.contiguous(), value.contiguous(), causal, scale
        )
        return out, lse
    out, lse = _FORWARD(query, key, value, 0.0, causal, scale=scale)[:2]
    return out, lse


def _backward_call(
    grad: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    causal: bool,
    scale: float,
    repeat_kv: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of one attention call given its output and log-sum-exps. ``repeat_kv``: on PyTorch's kernel,
    repeat the keys/values to every query head and sum afterwards (faster there for a small dense key set)."""
    kernels = _kernels(query.device, query.dtype, query.shape[-1])
    if kernels is not None:
        dq, dk, dv = kernels.bf16_attention_backward(
            grad.contiguous(), query.contiguous(), key.contiguous(), value.contiguous(), out.contiguous(),
            lse.contiguous(), causal, scale,
        )  # fmt: skip
        return dq, dk, dv
    if not repeat_kv or key.shape[1] == query.shape[1]:
        dq, dk, dv = _BACKWARD(grad, query, key, value, out, lse, 0.0, causal, scale=scale)
        return dq, dk, dv
    kv_heads, group = key.shape[1], query.shape[1] // key.shape[1]
    dq, dk, dv = _BACKWARD(
        grad,
        query,
        key.repeat_interleave(group, 1),
        value.repeat_interleave(group, 1),
        out,
        lse,
        0.0,
        causal,
        scale=scale,
    )
    return dq, dk.unflatten(1, (kv_heads, group)).sum(2), dv.unflatten(1, (kv_heads, group)).sum(2)


def supported(query: torch.Tensor) -> bool:
    """Whether :func:`prefix_attention` runs for ``query``'s device and dtype."""
    return (
        _FORWARD is not None
        and _BACKWARD is not None
        and query.device.type == "cpu"
        and query.dtype in (torch.float32, torch.bfloat16, torch.float16)
    )


def _stack(x: torch.Tensor) -> torch.Tensor:
    """(b, H, L, ...) -> (1, H, b * L, ...): the members' rows as one sequence."""
    b, h, n = x.shape[:3]
    return x.transpose(0, 1).reshape(1, h, b * n, *x.shape[3:])


def _unstack(x: torch.Tensor, b: int) -> torch.Tensor:
    """(1, H, b * L, ...) -> (b, H, L, ...)."""
    h, bn = x.shape[1:3]
    return x.reshape(h, b, bn // b, *x.shape[3:]).transpose(0, 1)


@torch.library.custom_op("azr::prefix_attention", mutates_args=())
def _prefix_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output (b, H, L, d) and the parts' log-sum-exps (b, H, L) each. An operator rather than a Python autograd
    function so that selective checkpointing (azr.training.layerwise) can keep its outputs instead of running it again."""
    b = query.shape[0]
    out_prefix, lse_prefix = _forward(_stack(query), prefix_key, prefix_value, False, scale)
    out_own, lse_own = _forward(query, key, value, True, scale)
    lse_prefix = _unstack(lse_prefix, b).float()  # (b, H, L)
    lse_own = lse_own.float()
    lse = torch.logaddexp(lse_prefix, lse_own)
    w_prefix = torch.exp(lse_prefix - lse).unsqueeze(-1)
    w_own = torch.exp(lse_own - lse).unsqueeze(-1)
    out = (w_prefix * _unstack(out_prefix, b).float() + w_own * out_own.float()).to(query.dtype)
    return out, lse_prefix.contiguous(), lse_own


@_prefix_attention_op.register_fake
def _(query, key, value, prefix_key, prefix_value, scale):  # shapes only (tracing, meta tensors)
    lse = query.new_empty(query.shape[:3], dtype=torch.float32)
    return torch.empty_like(query), lse, torch.empty_like(lse)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    query, key, value, prefix_key, prefix_value, scale = inputs
    out, lse_prefix, lse_own = output
    ctx.save_for_backward(query, key, value, prefix_key, prefix_value, out, lse_prefix, lse_own)
    ctx.scale = scale


def _backward(ctx: Any, grad: torch.Tensor, *_lse_grads: Any) -> tuple[torch.Tensor | None, ...]:
    """The log-sum-exps are outputs for the checkpoint only; nothing differentiates through them."""
    query, key, value, prefix_key, prefix_value, out, lse_prefix, lse_own = ctx.saved_tensors
    b, scale = query.shape[0], ctx.scale
    lse = torch.logaddexp(lse_prefix, lse_own)
    grad = grad.float()
    grad_prefix = (torch.exp(lse_prefix - lse).unsqueeze(-1) * grad).to(query.dtype)
    grad_own = (torch.exp(lse_own - lse).unsqueeze(-1) * grad).to(query.dtype)
    dq_prefix, dk_prefix, dv_prefix = _backward_call(
        _stack(grad_prefix),
        _stack(query),
        prefix_key,
        prefix_value,
        _stack(out),
        _stack(lse_prefix),
        False,
        scale,
        True,
    )
    dq, dk, dv = _backward_call(grad_own, query, key, value, out, lse_own, True, scale)
    return dq + _unstack(dq_prefix, b), dk, dv, dk_prefix, dv_prefix, None


_prefix_attention_op.register_autograd(_backward, setup_context=_setup)
OP = torch.ops.azr.prefix_attention.default


def prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention output (b, heads, L, d) of ``query`` (b, heads, L, d) over the shared prefix ``prefix_key``/
    ``prefix_value`` (1, kv_heads, P, d), all of it, then causally over its own ``key``/``value`` (b, kv_heads, L, d).
    ``heads`` must be a multiple of ``kv_heads``."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    return _prefix_attention_op(query, key, value, prefix_key, prefix_value, scale)[0]


@torch.library.custom_op("azr::attention", mutates_args=())
def _attention_op(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output (b, H, L, d) and log-sum-exps (b, H, L) of plain attention; an operator for the selective checkpoint,
    like the prefix one."""
    return _forward(query, key, value, causal, scale)


@_attention_op.register_fake
def _(query, key, value, causal, scale):
    return torch.empty_like(query), query.new_empty(query.shape[:3], dtype=torch.float32)


def _setup_plain(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    query, key, value, causal, scale = inputs
    ctx.save_for_backward(query, key, value, *output)
    ctx.causal, ctx.scale = causal, scale


def _backward_plain(ctx: Any, grad: torch.Tensor, _lse_grad: Any) -> tuple[torch.Tensor | None, ...]:
    query, key, value, out, lse = ctx.saved_tensors
    dq, dk, dv = _backward_call(grad.contiguous(), query, key, value, out, lse, ctx.causal, ctx.scale)
    return dq, dk, dv, None, None


_attention_op.register_autograd(_backward_plain, setup_context=_setup_plain)
PLAIN_OP = torch.ops.azr.attention.default


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """Attention output (b, heads, L, d) of ``query`` over ``key``/``value`` (b, kv_heads, S, d), causal (L == S)
    or dense, through azr's kernels where :func:`kernels_apply` (else PyTorch's flash kernel)."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    return _attention_op(query, key, value, causal, scale)[0]


def autocast_dtype(query: torch.Tensor) -> torch.dtype:
    """The dtype sdpa would run in: autocast's when on (rotary embeddings leave queries/keys in fp32 and values in
    bf16; the custom operators sit below autocast and would see the mix), else the query's."""
    device = query.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype


# transformers attention functions (plugged in with azr.hfcompat.attention_implementation around the calls that need
# them; transformers builds no mask for a registered function it does not know):
# - CAUSAL_ATTENTION: causal attention without a mask through :func:`attention`, for calls where no token is padding
#   (the trainer's prefix pass and members without a prefix, the sampler's shared prefixes);
# - SPLIT_ATTENTION: members after a shared prefix through :func:`prefix_attention`, the prefix's keys/values given
#   as ``azr_prefix=(key, value)`` (one layer's call) or ``azr_prefix_layers=[(key, value) per layer]`` (a whole
#   model's).
CAUSAL_ATTENTION = "azr_causal"
SPLIT_ATTENTION = "azr_prefix_split"


def _transformers_attention(name: str, fn: Any) -> Any:
    """``fn(module, query, key, value, scaling, **kwargs)`` -> (b, H, L, d) as a transformers attention function:
    no mask or dropout, inputs cast to the dtype sdpa would run in, output (b, L, H, d)."""

    def call(
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if attention_mask is not None or dropout:
            raise RuntimeError(f"the {name} attention runs only without a mask or dropout")
        dtype = autocast_dtype(query)
        out = fn(module, query.to(dtype), key.to(dtype), value.to(dtype), scaling, **kwargs)
        return out.transpose(1, 2).contiguous(), None

    return call


def _causal(module: Any, query: Any, key: Any, value: Any, scaling: Any, **kwargs: Any) -> torch.Tensor:
    return attention(query, key, value, True, scaling)


def _split(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    scaling: float | None,
    azr_prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
    azr_prefix_layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    layers = azr_prefix_layers
    prefix = azr_prefix if azr_prefix is not None else None if layers is None else layers[module.layer_idx]
    if prefix is None:
        raise RuntimeError(f"the {SPLIT_ATTENTION} attention needs the shared prefix's keys/values")
    prefix_key, prefix_value = (t.to(query.dtype) for t in prefix)
    return prefix_attention(query, key, value, prefix_key, prefix_value, scaling)


if AttentionInterface is not None:
    AttentionInterface.register(CAUSAL_ATTENTION, _transformers_attention(CAUSAL_ATTENTION, _causal))
    AttentionInterface.register(SPLIT_ATTENTION, _transformers_attention(SPLIT_ATTENTION, _split))
