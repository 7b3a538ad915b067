"""Training attention of members after a shared prompt head, as two fused-kernel calls merged exactly.

In the trainer's member pass (:mod:`azr.layerwise`) each of ``b`` members (L tokens, right-padded) attends to the
shared head (P tokens) and causally to its own tokens. Done as one attention call that needs the head's keys/values
concatenated to every member's (b copies), repeated to every query head (grouped-query attention with a mask is not
fused) and a (b, 1, L, P + L) mask, whose masked upper triangle the kernel computes anyway. Here instead:

- **head part**: the queries of all members stacked as one sequence, ``(1, heads, b * L, d)``, against the head's
  keys/values ``(1, kv_heads, P, d)``: dense, no mask, the kv heads read natively, the head never copied;
- **own part**: each member against its own keys/values, causal without a mask, so the kernel skips the blocks
  above the diagonal.

The outputs are merged through the parts' log-sum-exps, ``o = w1 o1 + w2 o2`` with ``w_i = exp(lse_i - lse)``. The
backward calls the kernel's own backward for each part with the part's log-sum-exp, the *merged* output and the
gradient scaled by ``w_i``: the kernel computes ``dS = P_i (dO_i V^T - rowsum(dO_i * O))``, which with
``dO_i = w_i dO`` and ``P = w_i P_i`` is exactly the merged attention's ``P (dO V^T - rowsum(dO * O))``. Same
gradients as the single call up to float rounding (tests/test_layerwise.py).

CPU only (PyTorch's CPU flash kernel returns the log-sum-exps and takes them back in its backward);
:func:`supported` says when it applies.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["OP", "prefix_attention", "supported"]

_ATEN = torch.ops.aten
_FORWARD = getattr(_ATEN, "_scaled_dot_product_flash_attention_for_cpu", None)
_BACKWARD = getattr(_ATEN, "_scaled_dot_product_flash_attention_for_cpu_backward", None)


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
    head_key: torch.Tensor,
    head_value: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output (b, H, L, d) and the parts' log-sum-exps (b, H, L) each. An operator rather than a Python autograd
    function so that selective checkpointing (azr.layerwise) can keep its outputs instead of running it again."""
    b = query.shape[0]
    out_head, lse_head = _FORWARD(_stack(query), head_key, head_value, 0.0, False, scale=scale)[:2]
    out_own, lse_own = _FORWARD(query, key, value, 0.0, True, scale=scale)[:2]
    lse_head = _unstack(lse_head, b).float()  # (b, H, L)
    lse_own = lse_own.float()
    lse = torch.logaddexp(lse_head, lse_own)
    w_head = torch.exp(lse_head - lse).unsqueeze(-1)
    w_own = torch.exp(lse_own - lse).unsqueeze(-1)
    out = (w_head * _unstack(out_head, b).float() + w_own * out_own.float()).to(query.dtype)
    return out, lse_head.contiguous(), lse_own


@_prefix_attention_op.register_fake
def _(query, key, value, head_key, head_value, scale):  # shapes only (tracing, meta tensors)
    lse = query.new_empty(query.shape[:3], dtype=torch.float32)
    return torch.empty_like(query), lse, torch.empty_like(lse)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
    query, key, value, head_key, head_value, scale = inputs
    out, lse_head, lse_own = output
    ctx.save_for_backward(query, key, value, head_key, head_value, out, lse_head, lse_own)
    ctx.scale = scale


def _backward(ctx: Any, grad: torch.Tensor, *_lse_grads: Any) -> tuple[torch.Tensor | None, ...]:
    """The log-sum-exps are outputs for the checkpoint only; nothing differentiates through them."""
    query, key, value, head_key, head_value, out, lse_head, lse_own = ctx.saved_tensors
    b, scale = query.shape[0], ctx.scale
    lse = torch.logaddexp(lse_head, lse_own)
    grad = grad.float()
    grad_head = (torch.exp(lse_head - lse).unsqueeze(-1) * grad).to(query.dtype)
    grad_own = (torch.exp(lse_own - lse).unsqueeze(-1) * grad).to(query.dtype)
    # The kernel's backward is faster with one key/value head per query head (its grouped-query path accumulates
    # the shared heads' gradients slowly): the head's keys/values are small, so repeat them and sum afterwards.
    kv_heads, group = head_key.shape[1], query.shape[1] // head_key.shape[1]
    dq_head, dk_head, dv_head = _BACKWARD(
        _stack(grad_head),
        _stack(query),
        head_key.repeat_interleave(group, 1),
        head_value.repeat_interleave(group, 1),
        _stack(out),
        _stack(lse_head),
        0.0,
        False,
        scale=scale,
    )
    dk_head = dk_head.unflatten(1, (kv_heads, group)).sum(2)
    dv_head = dv_head.unflatten(1, (kv_heads, group)).sum(2)
    dq, dk, dv = _BACKWARD(grad_own, query, key, value, out, lse_own, 0.0, True, scale=scale)
    return dq + _unstack(dq_head, b), dk, dv, dk_head, dv_head, None


_prefix_attention_op.register_autograd(_backward, setup_context=_setup)
OP = torch.ops.azr.prefix_attention.default


def prefix_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    head_key: torch.Tensor,
    head_value: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention output (b, heads, L, d) of ``query`` (b, heads, L, d) over the shared head ``head_key``/
    ``head_value`` (1, kv_heads, P, d), all of it, then causally over its own ``key``/``value`` (b, kv_heads, L, d).
    ``heads`` must be a multiple of ``kv_heads``."""
    if scale is None:
        scale = query.shape[-1] ** -0.5
    return _prefix_attention_op(query, key, value, head_key, head_value, scale)[0]
