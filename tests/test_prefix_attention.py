"""The split attention of members after a shared head (azr.prefix_attention) against one masked attention call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from azr.prefix_attention import prefix_attention, supported


def _reference(q, k, v, hk, hv, scale):
    """One sdpa call over [head, own] keys with an explicit mask: the whole head, then causal."""
    b, heads, n, _ = q.shape
    group, p = heads // k.shape[1], hk.shape[2]
    keys = torch.cat([hk.expand(b, -1, -1, -1), k], 2).repeat_interleave(group, 1)
    values = torch.cat([hv.expand(b, -1, -1, -1), v], 2).repeat_interleave(group, 1)
    keep = torch.cat([torch.ones(n, p, dtype=torch.bool), torch.ones(n, n, dtype=torch.bool).tril()], 1)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=keep, scale=scale)


@pytest.mark.parametrize(("b", "n", "p", "kv_heads"), [(3, 7, 5, 2), (2, 33, 70, 1), (1, 4, 1, 4)])
def test_split_attention_equals_one_masked_call_forward_and_backward(b, n, p, kv_heads):
    torch.manual_seed(0)
    heads, d = 4, 16
    inputs = [
        torch.randn(b, heads, n, d),
        torch.randn(b, kv_heads, n, d),
        torch.randn(b, kv_heads, n, d),
        torch.randn(1, kv_heads, p, d),
        torch.randn(1, kv_heads, p, d),
    ]
    grad = torch.randn(b, heads, n, d)
    results = []
    for fn in (_reference, prefix_attention):
        xs = [t.clone().requires_grad_() for t in inputs]
        out = fn(*xs, 0.3)
        out.backward(grad)
        results.append([out.detach()] + [x.grad for x in xs])
    for got, want in zip(*reversed(results)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_split_attention_in_bf16_stays_within_rounding_of_fp32():
    torch.manual_seed(1)
    inputs = [torch.randn(2, 6, 20, 64), *(torch.randn(2, 2, 20, 64) for _ in range(2))]
    inputs += [torch.randn(1, 2, 30, 64) for _ in range(2)]
    fp32 = prefix_attention(*inputs)
    bf16 = prefix_attention(*(t.bfloat16() for t in inputs))
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32, atol=3e-2, rtol=3e-2)


def test_supported_only_where_the_cpu_kernel_runs():
    assert supported(torch.zeros(1, dtype=torch.bfloat16))
    assert not supported(torch.zeros(1, dtype=torch.int64))
    assert not supported(torch.zeros(1, device="meta"))
