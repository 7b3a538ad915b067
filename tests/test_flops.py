"""FLOPs counted from shapes (azr.flops) against torch's own counter, and the token work of a step."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from azr.flops import Shape, Work, generation_work, update_work


def _torch_flops(model, ids: torch.Tensor) -> dict[str, int]:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids)
    flops: dict[str, int] = {"products": 0, "attention": 0}
    for op, n in counter.get_flop_counts()["Global"].items():
        flops["products" if str(op).split(".")[1] in ("mm", "addmm", "matmul") else "attention"] += n
    return flops


def test_forward_flops_match_torch_counter(tiny):
    model, _ = tiny
    shape = Shape.from_config(model.config)
    n = 24
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")  # torch's counter does not see the CPU kernel of sdpa
    try:
        counted = _torch_flops(model, torch.arange(1, n + 1)[None])
    finally:
        model.set_attn_implementation(before)
    products = shape.forward_flops(Work(n, 0, n))
    assert counted["products"] == products
    # torch counts the full n x n score matrix; a causal model needs the lower triangle.
    attention = shape.forward_flops(Work(0, n * (n + 1) // 2, 0))
    assert counted["attention"] * (n + 1) / (2 * n) == attention


def test_generation_work_shares_prefixes_and_skips_duplicates():
    prefix = list(range(100, 120))  # 20 shared tokens: over azr.prefix's 16-token minimum
    a, b, alone = [*prefix, 1, 2], [*prefix, 3], [7, 8, 9]
    prefill, decode = generation_work([a, b, a, alone], [3, 1, 0, 2])
    # the prefix once, then a's 2 tokens, b's 1 and the loner's 3; `a` twice is prefilled once
    assert prefill.tokens == 20 + 2 + 1 + 3 and prefill.logit_tokens == 3
    prefix_ctx = 20 * 21 // 2
    assert prefill.context == prefix_ctx + (21 + 22) + 21 + (1 + 2 + 3)
    # decoding: every generated token but the first; contexts continue after each prompt
    assert decode == Work(2 + 0 + 0 + 1, (23 + 24) + 4, 3)


def test_update_work_counts_replies_as_logits():
    assert update_work([[1, 2, 3]], [2]) == Work(5, 15, 2)
    prefix = list(range(50, 70))
    shared = update_work([[*prefix, 1], [*prefix, 2]], [1, 1])
    assert shared.tokens == 20 + 2 + 2 and shared.logit_tokens == 2
