"""azr.training.lm_head's tiled LM head against the whole head, on small tensors."""

from __future__ import annotations

import pytest
import torch

from azr.training import lm_head


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("entropy", [False, True])
def test_chunked_head_matches_the_whole_head(bf16, entropy, monkeypatch):
    """The chunked head (recomputed in backward, weight gradient built a vocabulary block at a time) gives the
    log-probs, entropies and gradients of the whole head, in fp32 and under bf16 autocast, also when it adds the
    weight's gradient to ``.grad`` itself."""
    monkeypatch.setattr(lm_head, "VOCAB_BLOCK", 7)
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(50, 16, generator=g))
    hidden = torch.randn(11, 16, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (11,), generator=g)
    temps = torch.rand(11, 1, generator=g) + 0.5
    up_logp, up_ent = torch.randn(11, generator=g), torch.randn(11, generator=g)

    def run(chunk: int, in_place: bool = False) -> list[torch.Tensor]:
        head.weight.grad = hidden.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logp, ent = lm_head.head_stats(head, hidden, targets, temps, entropy, chunk, in_place)
        loss = (logp * up_logp).sum() + ((ent * up_ent).sum() if entropy else 0.0)
        loss.backward()
        out = [logp.detach(), hidden.grad, head.weight.grad]
        return out + ([ent.detach()] if entropy else [])

    whole = run(0)
    # row tiles of one row, of several rows, one tile for all rows; the weight's gradient into .grad directly
    for chunk, in_place in ((1, False), (4, False), (32, False), (4, True)):
        chunked = run(chunk, in_place)
        tol = {"atol": 2e-2, "rtol": 2e-2} if bf16 else {"atol": 1e-5, "rtol": 1e-5}
        assert all(t.dtype == torch.float32 for t in chunked)
        for a, b in zip(whole, chunked, strict=True):
            torch.testing.assert_close(b, a, **tol)


def test_chunked_head_in_place_adds_to_an_existing_grad():
    """In place, the chunked head adds its weight gradient to what ``.grad`` already holds, like autograd would."""
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(8, 20, bias=False)
    hidden = torch.randn(5, 8, generator=g)
    targets = torch.randint(0, 20, (5,), generator=g)
    for in_place in (False, True):
        head.weight.grad = torch.ones_like(head.weight)
        logp, _ = lm_head.head_stats(head, hidden, targets, None, False, chunk=2, grad_in_place=in_place)
        logp.sum().backward()
        if not in_place:
            expected = head.weight.grad.clone()
    torch.testing.assert_close(head.weight.grad, expected)
    assert not torch.equal(expected, torch.ones_like(expected))


def test_chunked_head_rejects_a_target_outside_the_vocabulary():
    head = torch.nn.Linear(8, 20, bias=False)
    with pytest.raises(ValueError, match="outside the LM head's vocabulary"):
        lm_head.head_stats(head, torch.randn(2, 8), torch.tensor([3, 20]), None, False, chunk=2)


def test_tiles_are_large_on_a_gpu_and_any_block_gives_the_same_stats():
    """A GPU gets 1024 x 16384 tiles (80 for an 8k reply over 152k entries, not ~2,400 of the CPU's 128 x 4096);
    the block size changes nothing in the results."""
    from azr.training.lm_head import head_tile

    assert head_tile(torch.device("cpu")) == (128, lm_head.VOCAB_BLOCK)
    assert head_tile(torch.device("cuda")) == (1024, 16384)
    g = torch.Generator().manual_seed(1)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden, targets = torch.randn(5, 8, generator=g), torch.randint(0, 30, (5,), generator=g)
    whole = lm_head.head_stats(head, hidden, targets, None, True)
    for block in (7, 30, 64):
        got = lm_head.head_stats(head, hidden, targets, None, True, chunk=2, block=block)
        torch.testing.assert_close(got, whole, atol=1e-5, rtol=0)
