"""PPO-clip loss: on-policy = REINFORCE, clipping, token-mean with micro-batches, entropy and KL terms."""

from __future__ import annotations

import pytest
import torch

from azr.algo import ppo_clip_loss, token_logprobs


def _policy(seed: int = 0, b: int = 3, t: int = 5, v: int = 7):
    """Logits (B, T, V) as a leaf parameter, sampled tokens (B, T) and a ragged mask (B, T)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, t, v, generator=g).requires_grad_()
    tokens = torch.randint(0, v, (b, t), generator=g)
    lengths = torch.tensor([5, 2, 4])[:b]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # (B, T)
    return logits, tokens, mask


def _logp(logits, tokens):
    return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def test_on_policy_gradient_is_reinforce():
    """With old = current (ratio 1) the PPO gradient is -sum_t A_i grad logp_t / N: plain REINFORCE."""
    logits, tokens, mask = _policy()
    adv = torch.tensor([1.5, -0.5, 0.25])
    logp = _logp(logits, tokens)
    loss, metrics = ppo_clip_loss(logp, logp.detach(), adv, mask)
    (grad_ppo,) = torch.autograd.grad(loss, logits)
    reinforce = -(adv[:, None] * _logp(logits, tokens) * mask).sum() / mask.sum()
    (grad_pg,) = torch.autograd.grad(reinforce, logits)
    torch.testing.assert_close(grad_ppo, grad_pg)
    assert metrics["clip_frac"] == 0.0 and metrics["approx_kl"] == 0.0
    assert loss.item() == pytest.approx(float(-(adv[:, None] * mask).sum() / mask.sum()))


def test_clipping_stops_gradient_beyond_the_range():
    logits, tokens, mask = _policy(b=1)
    logp = _logp(logits, tokens)
    old = logp.detach() - 0.5  # ratio e^0.5 = 1.65 > 1.2 on every token
    loss, metrics = ppo_clip_loss(logp, old, torch.tensor([1.0]), mask[:1])
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad == 0)
    assert metrics["clip_frac"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(-1.2)
    # negative advantage with a high ratio is not clipped (pessimistic bound): gradient flows
    logp = _logp(logits, tokens)
    loss, metrics = ppo_clip_loss(logp, old, torch.tensor([-1.0]), mask[:1])
    assert metrics["clip_frac"] == 0.0
    assert torch.autograd.grad(loss, logits)[0].abs().sum() > 0


def test_only_clipped_tokens_lose_their_gradient():
    """Tokens 0-1 have ratio e^0.5 (outside [0.8, 1.2], positive advantage: clipped), tokens 2-4 ratio 1: the
    clipped ones get exactly zero gradient, the others -A / N each, and clip_frac counts 2 of 5."""
    logp = torch.randn(1, 5, generator=torch.Generator().manual_seed(9)).requires_grad_()  # (B, T)
    old = logp.detach() - torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0]])
    loss, metrics = ppo_clip_loss(logp, old, torch.tensor([2.0]), torch.ones(1, 5))
    (grad,) = torch.autograd.grad(loss, logp)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, -0.4, -0.4, -0.4]]))
    assert metrics["clip_frac"] == pytest.approx(2 / 5)


def test_asymmetric_clip_uses_the_upper_bound():
    logits, tokens, mask = _policy(b=1)
    logp = _logp(logits, tokens)
    loss, _ = ppo_clip_loss(logp, logp.detach() - 0.5, torch.tensor([1.0]), mask[:1], clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


def test_micro_batches_with_global_normaliser_equal_full_batch():
    logits, tokens, mask = _policy(seed=3)
    adv = torch.tensor([0.7, -1.1, 0.3])
    old = (_logp(logits, tokens) + 0.1 * torch.randn(3, 5)).detach()
    ent = torch.rand(3, 5)
    kw = {"entropy_coef": 0.01}
    full, full_m = ppo_clip_loss(_logp(logits, tokens), old, adv, mask, entropy=ent, **kw)
    (g_full,) = torch.autograd.grad(full, logits)
    n = float(mask.sum())
    total, grads, summed = 0.0, torch.zeros_like(logits), {}
    for sl in (slice(0, 1), slice(1, 3)):
        part, m = ppo_clip_loss(
            _logp(logits, tokens)[sl], old[sl], adv[sl], mask[sl], entropy=ent[sl], token_normalizer=n, **kw
        )
        grads += torch.autograd.grad(part, logits)[0]
        total += part.item()
        summed = {k: summed.get(k, 0.0) + v for k, v in m.items()}
    assert total == pytest.approx(full.item(), abs=1e-6)
    torch.testing.assert_close(grads, g_full)
    for key in full_m:
        assert summed[key] == pytest.approx(full_m[key], abs=1e-6)


def test_entropy_bonus_and_kl_penalty():
    logits, tokens, mask = _policy()
    logp = _logp(logits, tokens)
    adv = torch.zeros(3)
    ent = torch.full((3, 5), 2.0)
    loss, m = ppo_clip_loss(logp, logp.detach(), adv, mask, entropy=ent, entropy_coef=0.1)
    assert loss.item() == pytest.approx(-0.2) and m["entropy"] == pytest.approx(2.0)
    loss, m = ppo_clip_loss(logp, logp.detach(), adv, mask, ref_logprobs=logp.detach(), kl_coef=1.0)
    assert loss.item() == pytest.approx(0.0) and m["kl"] == pytest.approx(0.0)
    loss, m = ppo_clip_loss(logp, logp.detach(), adv, mask, ref_logprobs=logp.detach() - 1.0, kl_coef=1.0)
    assert m["kl"] > 0 and loss.item() == pytest.approx(m["kl"])
    with pytest.raises(ValueError, match="entropy"):
        ppo_clip_loss(logp, logp.detach(), adv, mask, entropy_coef=0.1)
    with pytest.raises(ValueError, match="reference"):
        ppo_clip_loss(logp, logp.detach(), adv, mask, kl_coef=0.1)


@pytest.mark.parametrize("with_entropy", [False, True])
def test_token_logprobs_match_autograd_reference(with_entropy):
    g = torch.Generator().manual_seed(5)
    logits = (3 * torch.randn(6, 11, generator=g, dtype=torch.float64)).requires_grad_()
    targets = torch.randint(0, 11, (6,), generator=g)
    w_lp, w_ent = (
        torch.randn(6, generator=g, dtype=torch.float64),
        torch.randn(6, generator=g, dtype=torch.float64),
    )
    logp, ent = token_logprobs(logits, targets, with_entropy)
    log_sm = torch.log_softmax(logits, -1)
    ref_logp = log_sm.gather(1, targets[:, None]).squeeze(1)
    ref_ent = -(log_sm.exp() * log_sm).sum(-1)
    torch.testing.assert_close(logp, ref_logp)
    if with_entropy:
        torch.testing.assert_close(ent, ref_ent)
        (grad,) = torch.autograd.grad((w_lp * logp + w_ent * ent).sum(), logits)
        (ref,) = torch.autograd.grad((w_lp * ref_logp + w_ent * ref_ent).sum(), logits)
        torch.testing.assert_close(grad, ref)
        assert torch.autograd.gradcheck(
            lambda z: token_logprobs(z, targets, True), (logits.detach().requires_grad_(),)
        )
    else:
        assert ent is None
