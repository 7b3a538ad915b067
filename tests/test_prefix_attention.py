"""The split attention of members after a shared prefix (azr.kernels.prefix_attention) against one masked attention call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from azr.kernels.prefix_attention import prefix_attention, supported


def _reference(q, k, v, pk, pv, scale):
    """One sdpa call over [prefix, own] keys with an explicit mask: the whole prefix, then causal."""
    b, heads, n, _ = q.shape
    group, p = heads // k.shape[1], pk.shape[2]
    keys = torch.cat([pk.expand(b, -1, -1, -1), k], 2).repeat_interleave(group, 1)
    values = torch.cat([pv.expand(b, -1, -1, -1), v], 2).repeat_interleave(group, 1)
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
    for got, want in zip(*reversed(results), strict=True):
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


def _kernels_or_skip():
    from azr.kernels import prefix_attention as pa

    if not pa.kernels_apply(torch.device("cpu"), torch.bfloat16, 64):
        pytest.skip("azr's attention kernels need a C++ compiler and an AVX512-BF16 CPU")


def _fp32_attention(q, k, v, grad, causal, scale):
    """Forward and backward in fp32 from the (bf16) inputs: the reference both kernels are measured against."""
    q, k, v = (t.float().requires_grad_() for t in (q, k, v))
    group = q.shape[1] // k.shape[1]
    out = F.scaled_dot_product_attention(
        q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), is_causal=causal, scale=scale
    )
    out.backward(grad.float())
    return [out.detach(), q.grad, k.grad, v.grad]


def _relative(got, want):
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize(
    ("b", "n", "s", "kv_heads", "causal"),
    [(1, 37, 37, 3, True), (2, 70, 45, 3, False), (3, 33, 33, 1, True), (1, 100, 300, 9, False)],
)
def test_attention_kernels_match_fp32_within_the_flash_kernels_error(b, n, s, kv_heads, causal):
    """azr's bf16 kernels (forward and backward, grouped-query attention native) against fp32, next to PyTorch's
    flash kernel on the same bf16 inputs: odd lengths, padding to the kernels' 32-column tiles, causal and dense."""
    _kernels_or_skip()
    from azr.kernels import prefix_attention as pa

    torch.manual_seed(b * n + s)
    heads, d, scale = 9, 64, 0.125
    q = torch.randn(b, heads, n, d).bfloat16()
    k, v = (torch.randn(b, kv_heads, s, d).bfloat16() for _ in range(2))
    grad = torch.randn(b, heads, n, d).bfloat16()
    want = _fp32_attention(q, k, v, grad, causal, scale)
    errors = {}
    for use in (True, False):
        pa.USE_KERNELS = use
        try:
            xs = [t.clone().requires_grad_() for t in (q, k, v)]
            out = pa.attention(*xs, causal, scale)
            out.backward(grad)
            errors[use] = [
                _relative(g, w) for g, w in zip([out.detach()] + [x.grad for x in xs], want, strict=True)
            ]
        finally:
            pa.USE_KERNELS = True
    for mine, flash in zip(errors[True], errors[False], strict=True):
        assert mine <= max(1.2 * flash, 4e-3)


def test_prefix_attention_on_the_kernels_matches_the_flash_path():
    """The split attention's parts on azr's kernels: the same output and gradients as on PyTorch's flash kernel,
    up to bf16 rounding (head size 64, grouped-query attention)."""
    _kernels_or_skip()
    from azr.kernels import prefix_attention as pa

    torch.manual_seed(2)
    inputs = [torch.randn(3, 6, 40, 64), *(torch.randn(3, 2, 40, 64) for _ in range(2))]
    inputs += [torch.randn(1, 2, 70, 64) for _ in range(2)]
    inputs = [t.bfloat16() for t in inputs]
    grad = torch.randn(3, 6, 40, 64).bfloat16()
    results = {}
    for use in (True, False):
        pa.USE_KERNELS = use
        try:
            xs = [t.clone().requires_grad_() for t in inputs]
            out = prefix_attention(*xs)
            out.backward(grad)
            results[use] = [out.detach()] + [x.grad for x in xs]
        finally:
            pa.USE_KERNELS = True
    for mine, flash in zip(results[True], results[False], strict=True):
        assert _relative(mine, flash.float()) < 1e-2
