"""The policy trainer on the tiny in-memory model: it learns, micro-batching is exact, LoRA and options work."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from azr.algo import ppo_clip_loss
from azr.config import AlgorithmConfig, ModelConfig, TrainingConfig
from azr.models import tiny_model
from azr.trainer import TrainBatch, Trainer

TRAIN = TrainingConfig(lr=1e-2, bf16_autocast=False, micro_batch_size=2, device="cpu")
ALGO = AlgorithmConfig(entropy_coef=0.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models run faster on one thread, and the test machine is shared."""


def make_batch(seed: int = 0, n: int = 5, advantages: list[float] | None = None) -> TrainBatch:
    g = torch.Generator().manual_seed(seed)
    prompts, replies = [], []
    for _ in range(n):
        p, c = (int(x) for x in torch.randint(1, 12, (2,), generator=g))
        prompts.append(torch.randint(3, 300, (p,), generator=g).tolist())
        replies.append(torch.randint(3, 300, (c,), generator=g).tolist())
    adv = advantages if advantages is not None else torch.randn(n, generator=g).tolist()
    return TrainBatch(prompts, replies, adv)


def naive_logprobs(model, batch: TrainBatch) -> list[torch.Tensor]:
    """Reference: one unpadded full forward per sequence, log_softmax over all logits."""
    out = []
    for p, c in zip(batch.prompt_ids, batch.completion_ids):
        ids = torch.tensor([p + c])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (L, V)
        pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
        out.append(logp[pos, torch.tensor(c)])
    return out


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def test_logprobs_match_unpadded_forward():
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    batch = make_batch(n=6)
    got = trainer.logprobs(batch)
    with torch.no_grad():
        want = naive_logprobs(trainer.model, batch)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.tensor(g), w, atol=1e-5, rtol=1e-5)


def test_one_update_changes_parameters_and_lowers_the_loss():
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    batch = make_batch(n=4, advantages=[1.0, 0.5, 1.0, 2.0])
    before = params(trainer.model)
    old = trainer.logprobs(batch)

    def loss_on_batch() -> float:
        """The PPO-clip loss of the fixed batch against the pre-update log-probs."""
        width = max(len(c) for c in batch.completion_ids)
        pad = lambda rows: torch.tensor([r + [0.0] * (width - len(r)) for r in rows])  # noqa: E731  (B, T)
        mask = pad([[1.0] * len(c) for c in batch.completion_ids])
        loss, _ = ppo_clip_loss(pad(trainer.logprobs(batch)), pad(old), torch.tensor(batch.advantages), mask)
        return loss.item()

    start = loss_on_batch()
    metrics = trainer.step(dataclasses.replace(batch, old_logprobs=old))
    assert metrics["tokens"] == sum(len(c) for c in batch.completion_ids)
    assert metrics["grad_norm"] > 0 and metrics["clip_frac"] == 0.0
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert loss_on_batch() < start
    new = trainer.logprobs(batch)
    assert sum(map(sum, new)) > sum(map(sum, old))  # positive advantages: replies became more likely


def capture_grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Copies of the accumulated gradients, taken just before the optimizer steps (the trainer frees them)."""
    grads: dict[str, torch.Tensor] = {}
    named = list(trainer.model.named_parameters())

    def hook(*_: object) -> None:
        grads.update({k: p.grad.clone() for k, p in named if p.grad is not None})

    trainer.optimizer.register_step_pre_hook(hook)
    return grads


def test_micro_batch_size_does_not_change_the_update():
    """Token-mean over the batch: 1, 2 or all sequences per micro-batch give the same gradient step."""
    batch = make_batch(seed=1, n=5)
    results = []
    for mbs in (1, 2, 5):
        model, tok = tiny_model()
        trainer = Trainer(model, tok, dataclasses.replace(TRAIN, micro_batch_size=mbs), ALGO)
        grads = capture_grads(trainer)
        m = trainer.step(batch)
        results.append((grads, m))
    (g0, m0), *rest = results
    for g, m in rest:
        for k in g0:
            torch.testing.assert_close(g[k], g0[k], atol=1e-6, rtol=1e-4)
        assert m["grad_norm"] == pytest.approx(m0["grad_norm"], rel=1e-4)
        assert m["loss"] == pytest.approx(m0["loss"], abs=1e-6)


def shared_head_batch(seed: int = 3) -> TrainBatch:
    """Two groups of prompts with a long common head each, plus one loner: what AZR prompts look like."""
    g = torch.Generator().manual_seed(seed)
    heads = [torch.randint(3, 300, (20,), generator=g).tolist() for _ in range(2)]
    prompts = [heads[i % 2] + torch.randint(3, 300, (3 + i,), generator=g).tolist() for i in range(6)]
    prompts.append(torch.randint(3, 300, (9,), generator=g).tolist())
    replies = [torch.randint(3, 300, (2 + i % 4,), generator=g).tolist() for i in range(7)]
    return TrainBatch(prompts, replies, torch.randn(7, generator=g).tolist())


def test_shared_prompt_head_gives_the_same_logprobs_and_gradients():
    """The head runs once per micro-batch, yet log-probs and the gradient equal those of full sequences."""
    batch = shared_head_batch()
    runs = []
    for share in (False, True):
        model, tok = tiny_model()
        trainer = Trainer(
            model, tok, dataclasses.replace(TRAIN, micro_batch_size=3, share_prefix=share), ALGO
        )
        logp = trainer.logprobs(batch)
        grads = capture_grads(trainer)
        runs.append((logp, grads, trainer.step(batch)))
    (lp0, g0, m0), (lp1, g1, m1) = runs
    for a, b in zip(lp0, lp1):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
    assert m0["shared_frac"] == 0.0
    assert m1["shared_frac"] > 0.3  # 2 heads of 20 tokens run twice each instead of 6 times


def test_gradient_matches_naive_reinforce():
    """On-policy step = REINFORCE on the token-mean: compare with a per-sequence naive backward."""
    batch = make_batch(seed=2, n=4)
    model, tok = tiny_model()
    trainer = Trainer(model, tok, dataclasses.replace(TRAIN, grad_clip=1e9), ALGO)
    ref_model, _ = tiny_model()
    n = sum(len(c) for c in batch.completion_ids)
    loss = sum(-a * lp.sum() for a, lp in zip(batch.advantages, naive_logprobs(ref_model, batch))) / n
    loss.backward()
    ref_norm = torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 1e9)
    assert trainer.step(batch)["grad_norm"] == pytest.approx(float(ref_norm), rel=1e-4)


def test_entropy_metric_and_old_logprobs_equal_on_policy():
    batch = make_batch(seed=3, n=3)
    model, tok = tiny_model()
    t1 = Trainer(model, tok, TRAIN, AlgorithmConfig(entropy_coef=0.01))
    old = t1.logprobs(batch)
    m = t1.step(dataclasses.replace(batch, old_logprobs=old))
    assert 0 < m["entropy"] <= torch.log(torch.tensor(float(len(tok)))).item() + 1e-4
    assert abs(m["approx_kl"]) < 1e-6
    model2, _ = tiny_model()
    t2 = Trainer(model2, tok, TRAIN, AlgorithmConfig(entropy_coef=0.01))
    t2.step(batch)
    for k, v in params(t1.model).items():
        torch.testing.assert_close(params(t2.model)[k], v, atol=1e-6, rtol=1e-5)


def test_lora_trains_only_the_adapter():
    model, tok = tiny_model()
    cfg = ModelConfig(lora=True, lora_rank=4, lora_alpha=8)
    trainer = Trainer(model, tok, TRAIN, ALGO, cfg)
    trainable = [k for k, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in k for k in trainable)
    before = params(trainer.model)
    trainer.step(make_batch(n=3, advantages=[1.0, 1.0, 1.0]))
    trainer.step(make_batch(n=3, advantages=[1.0, 1.0, 1.0]))
    after = params(trainer.model)
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.filterwarnings("ignore:training.bf16_autocast")
def test_gradient_checkpointing_and_bf16_autocast():
    batch = make_batch(seed=4, n=3)
    model, tok = tiny_model()
    plain = Trainer(model, tok, TRAIN, ALGO).logprobs(batch)
    model, tok = tiny_model()
    ckpt = Trainer(model, tok, TRAIN, ALGO, ModelConfig(gradient_checkpointing=True))
    for a, b in zip(ckpt.logprobs(batch), plain):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-5)
    assert ckpt.step(batch)["grad_norm"] > 0
    model, tok = tiny_model()
    bf16 = Trainer(model, tok, dataclasses.replace(TRAIN, bf16_autocast=True), ALGO)
    m = bf16.step(batch)
    assert m["skipped"] == 0.0 and m["grad_norm"] > 0
    for a, b in zip(bf16.logprobs(batch), plain):
        assert len(a) == len(b)


def test_non_finite_gradient_skips_the_update():
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    before = params(trainer.model)
    m = trainer.step(make_batch(n=2, advantages=[float("nan"), 1.0]))
    assert m["skipped"] == 1.0 and trainer.updates == 0
    assert all(torch.equal(before[k], v) for k, v in params(trainer.model).items())


def test_batch_validation():
    with pytest.raises(ValueError, match="one entry per sequence"):
        TrainBatch([[1]], [[2], [3]], [1.0])
    with pytest.raises(ValueError, match="one value per completion token"):
        TrainBatch([[1]], [[2, 3]], [1.0], old_logprobs=[[0.0]])
    model, tok = tiny_model()
    with pytest.raises(ValueError, match="no completion tokens"):
        Trainer(model, tok, TRAIN, ALGO).step(TrainBatch([[1]], [[]], [1.0]))


def test_bf16_autocast_auto_follows_the_hardware(monkeypatch):
    from azr import precision

    model, tok = tiny_model()
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert Trainer(model, tok, dataclasses.replace(TRAIN, bf16_autocast="auto"), ALGO).bf16 is False
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"amx_bf16"}))
    trainer = Trainer(model, tok, dataclasses.replace(TRAIN, bf16_autocast="auto"), ALGO)
    assert trainer.bf16 is True
    assert trainer.step(make_batch(n=2))["grad_norm"] > 0
