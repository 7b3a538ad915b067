"""The policy trainer on the tiny in-memory model: it learns, micro-batching is exact, the sampling temperature,
PPO mini-batches and the KL term act as documented, LoRA and options work."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from azr.algo import ppo_clip_loss
from azr.config import AlgorithmConfig, ModelConfig, TrainingConfig
from azr.metrics import METRICS as RUN_METRICS
from azr.models import tiny_model
from azr.training import layerwise
from azr.training.trainer import METRICS as TRAINER_METRICS
from azr.training.trainer import TrainBatch, Trainer

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
    for p, c in zip(batch.prompt_ids, batch.completion_ids, strict=True):
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
    for g, w in zip(got, want, strict=True):
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


def shared_prefix_batch(seed: int = 3, temperature: float | None = None) -> TrainBatch:
    """Two groups of prompts with a long common prefix each, plus one loner: what AZR prompts look like."""
    g = torch.Generator().manual_seed(seed)
    prefixes = [torch.randint(3, 300, (20,), generator=g).tolist() for _ in range(2)]
    prompts = [prefixes[i % 2] + torch.randint(3, 300, (3 + i,), generator=g).tolist() for i in range(6)]
    prompts.append(torch.randint(3, 300, (9,), generator=g).tolist())
    replies = [torch.randint(3, 300, (2 + i % 4,), generator=g).tolist() for i in range(7)]
    temps = None if temperature is None else [temperature] * 7
    return TrainBatch(prompts, replies, torch.randn(7, generator=g).tolist(), temperatures=temps)


def test_micro_batch_tokens_runs_each_prefix_once_for_the_same_update():
    """training.micro_batch_tokens lets a shared-prefix group's members share one micro-batch beyond
    micro_batch_size while rows x longest member stay in the budget: fewer micro-batches and prefix passes, the same
    gradient; groups too long for the budget still cut at micro_batch_size."""
    from azr.training.batching import micro_batches

    batch = shared_prefix_batch()
    cpu = torch.device("cpu")
    shapes = {
        t: [
            (mb.input_ids.shape, mb.prefix_ids is not None) for mb in micro_batches(batch, 2, True, 0, cpu, t)
        ]
        for t in (0, 8, 33)
    }
    # two prefixes of 20 tokens with 3 members each (5-13 tokens after the prefix), one loner
    assert len(shapes[0]) == 5 and len(shapes[33]) == 3
    assert all(rows * width <= 33 for (rows, width), _ in shapes[33] if rows > 2)
    assert len(shapes[8]) == 5  # no member fits 8 tokens four times: micro_batch_size rules
    runs = []
    for tokens in (0, 33):
        model, tok = tiny_model()
        train = dataclasses.replace(TRAIN, micro_batch_size=2, micro_batch_tokens=tokens)
        trainer = Trainer(model, tok, train, ALGO)
        grads = capture_grads(trainer)
        runs.append((grads, trainer.step(batch)))
    (g0, m0), (g1, m1) = runs
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
    assert m1["shared_frac"] > m0["shared_frac"]


def test_shared_prompt_prefix_gives_the_same_logprobs_and_gradients():
    """The shared prefix runs once per micro-batch, yet log-probs and the gradient equal those of full sequences."""
    batch = shared_prefix_batch()
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
    for a, b in zip(lp0, lp1, strict=True):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
    assert m0["shared_frac"] == 0.0
    assert m1["shared_frac"] > 0.3  # 2 prefixes of 20 tokens run twice each instead of 6 times


@pytest.mark.parametrize(
    ("attn", "lora", "entropy"), [("sdpa", False, 0.0), ("eager", False, 0.01), ("sdpa", True, 0.01)]
)
def test_layerwise_checkpointing_keeps_shared_prefixes_and_the_exact_gradient(
    attn, lora, entropy, monkeypatch
):
    """Checkpointing layer by layer (azr.training.layerwise) keeps the shared prefixes (HF's own cannot keep a cache), and
    log-probs and gradients equal those of the plain forward over whole sequences; the LM head runs in chunks."""
    monkeypatch.setattr("azr.training.lm_head.HEAD_CHUNK", 4)
    batch = shared_prefix_batch(temperature=0.7)
    algo = AlgorithmConfig(entropy_coef=entropy)
    split = []  # member layers run through the split attention (azr.kernels.prefix_attention), sdpa on a CPU
    from azr.kernels import prefix_attention as pa

    real = pa.prefix_attention
    monkeypatch.setattr(pa, "prefix_attention", lambda *a: split.append(1) or real(*a))
    runs = []
    for ckpt in (False, True):
        model, tok = tiny_model()
        model.config._attn_implementation = attn
        cfg = ModelConfig(gradient_checkpointing=ckpt, lora=lora, lora_rank=4, lora_alpha=8)
        train = dataclasses.replace(TRAIN, micro_batch_size=3, share_prefix=ckpt)
        trainer = Trainer(model, tok, train, algo, cfg)
        assert trainer.layerwise is ckpt and trainer.share_prefix is ckpt
        grads = capture_grads(trainer)
        runs.append((trainer.logprobs(batch), grads, trainer.step(batch)))
    (lp0, g0, m0), (lp1, g1, m1) = runs
    for a, b in zip(lp0, lp1, strict=True):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    assert g0 and g0.keys() == g1.keys()
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)
    assert m1["shared_frac"] > 0.3 and m1["grad_norm"] == pytest.approx(m0["grad_norm"], rel=1e-4)
    assert bool(split) is (attn == "sdpa")


def test_layerwise_checkpointing_without_prefixes_pads_and_all():
    """Micro-batches with no shared prefix and right padding (sdpa runs them causal, with no mask): log-probs and
    gradients equal those of the plain forward pass."""
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 300, (4 + 3 * i,), generator=g).tolist() for i in range(5)]
    replies = [torch.randint(3, 300, (2 + i,), generator=g).tolist() for i in range(5)]
    batch = TrainBatch(prompts, replies, torch.randn(5, generator=g).tolist(), temperatures=[0.7] * 5)
    runs = []
    for ckpt in (False, True):
        model, tok = tiny_model()
        model.config._attn_implementation = "sdpa"
        trainer = Trainer(model, tok, dataclasses.replace(TRAIN, micro_batch_size=3), ALGO,
                          ModelConfig(gradient_checkpointing=ckpt))  # fmt: skip
        assert trainer.layerwise is ckpt
        grads = capture_grads(trainer)
        runs.append((trainer.logprobs(batch), grads, trainer.step(batch)))
    (lp0, g0, _), (lp1, g1, m1) = runs
    assert m1["padding_frac"] > 0
    for a, b in zip(lp0, lp1, strict=True):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), atol=1e-5, rtol=1e-5)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], atol=1e-6, rtol=1e-4)


def test_layerwise_checkpointing_keeps_less_for_backward():
    """What autograd keeps for backward: under layerwise checkpointing a fraction of the plain pass."""
    batch = shared_prefix_batch()
    kept = []
    for ckpt in (False, True):
        model, tok = tiny_model(layers=4)
        trainer = Trainer(model, tok, TRAIN, ALGO, ModelConfig(gradient_checkpointing=ckpt))
        mb = next(iter(trainer._micro_batches(batch)))
        sizes: list[int] = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            trainer._token_stats(mb, with_entropy=False)
        kept.append(sum(sizes))
    assert kept[1] < kept[0] / 2


@pytest.mark.skipif(
    not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"),
    reason="no CPU flash attention",
)
def layerwise_sdpa_trainer(train: TrainingConfig) -> Trainer:
    """A tiny model with sdpa attention under layer-wise checkpointing."""
    model, tok = tiny_model()
    model.config._attn_implementation = "sdpa"
    return Trainer(model, tok, train, ALGO, ModelConfig(gradient_checkpointing=True))


class OpCounter(TorchDispatchMode):
    """Counts the dispatched operators for which ``match(func, args)`` holds, while active."""

    def __init__(self, match) -> None:
        super().__init__()
        self.match, self.count = match, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += bool(self.match(func, args))
        return func(*args, **(kwargs or {}))


def test_layerwise_checkpointing_keeps_the_attention_outputs(monkeypatch):
    """Selective checkpointing: the backward recomputes each layer but not its attention kernel, whose outputs the
    forward kept (without it, the kernel runs again for the prefix's and the members' pass through 2 layers; the
    members' attention is azr's split operator on a CPU)."""
    from azr.kernels.prefix_attention import OP
    from azr.training import layerwise

    kernels = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default, OP}

    runs = {}
    for save in (False, True):
        monkeypatch.setattr(layerwise, "SAVE_ATTENTION", save)
        trainer = layerwise_sdpa_trainer(TRAIN)
        logp, _ = trainer._token_stats(next(iter(trainer._micro_batches(shared_prefix_batch()))), False)
        with OpCounter(lambda func, args: func in kernels) as count:
            trainer._backward(logp.sum())
        runs[save] = (count.count, trainer.model.model.layers[0].self_attn.q_proj.weight.grad)
    assert runs[False][0] == 4 and runs[True][0] == 0
    torch.testing.assert_close(runs[True][1], runs[False][1])


def test_layerwise_checkpointing_keeps_the_narrow_kv_projections(monkeypatch):
    """The backward's recompute skips the key/value projections (64 -> 32 in the tiny model, grouped-query
    attention), whose outputs the forward kept, for the prefix's and the members' pass through 2 layers; the MLP's
    down projection is not recomputed either way (the recompute stops at the last tensor backward needs). Same
    gradients."""
    from azr.training import layerwise

    def kv_product(func, args):
        return func is torch.ops.aten.mm.default and (args[0].shape[1], args[1].shape[1]) == (64, 32)

    runs = {}
    for keep in (False, True):
        monkeypatch.setattr(layerwise, "SAVE_KV_PROJECTIONS", keep)
        trainer = layerwise_sdpa_trainer(TRAIN)
        logp, _ = trainer._token_stats(next(iter(trainer._micro_batches(shared_prefix_batch()))), False)
        with OpCounter(kv_product) as count:
            trainer._backward(logp.sum())
        runs[keep] = (count.count, [p.grad.clone() for p in trainer.model.parameters()])
    assert runs[False][0] == 2 * 2 * 2 and runs[True][0] == 0
    for kept, recomputed in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(kept, recomputed)


def test_gradient_matches_naive_reinforce():
    """On-policy step = REINFORCE on the token-mean: compare with a per-sequence naive backward."""
    batch = make_batch(seed=2, n=4)
    model, tok = tiny_model()
    trainer = Trainer(model, tok, dataclasses.replace(TRAIN, grad_clip=1e9), ALGO)
    ref_model, _ = tiny_model()
    n = sum(len(c) for c in batch.completion_ids)
    loss = (
        sum(-a * lp.sum() for a, lp in zip(batch.advantages, naive_logprobs(ref_model, batch), strict=True))
        / n
    )
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


def test_entropy_is_not_reported_when_not_computed():
    """With entropy_coef = 0 the entropy is never computed, so the step must not report it (it used to log 0,
    which reads as a collapsed policy)."""
    model, tok = tiny_model()
    metrics = Trainer(model, tok, TRAIN, ALGO).step(make_batch(seed=4, n=3))
    assert "entropy" not in metrics
    assert "pg_loss" in metrics and "kl" not in metrics


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
    for a, b in zip(ckpt.logprobs(batch), plain, strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-5)
    assert ckpt.step(batch)["grad_norm"] > 0
    model, tok = tiny_model()
    bf16 = Trainer(model, tok, dataclasses.replace(TRAIN, bf16_autocast=True), ALGO)
    m = bf16.step(batch)
    assert m["skipped"] == 0.0 and m["grad_norm"] > 0
    for a, b in zip(bf16.logprobs(batch), plain, strict=True):
        assert len(a) == len(b)


@pytest.mark.filterwarnings("ignore:training.bf16_autocast")
def test_split_member_attention_under_bf16_autocast(monkeypatch):
    """Under bf16 autocast (queries/keys leave the rotary embedding in fp32, values in bf16) the members' split
    attention runs in bf16 like sdpa and gives the single masked call's gradients up to bf16 rounding."""
    batch = shared_prefix_batch(temperature=0.7)
    train = dataclasses.replace(TRAIN, bf16_autocast=True, micro_batch_size=3, share_prefix=True)
    grads = {}
    for split in (False, True):
        monkeypatch.setattr(layerwise, "SPLIT_ATTENTION", split)
        trainer = layerwise_sdpa_trainer(train)
        captured = capture_grads(trainer)
        assert trainer.step(batch)["skipped"] == 0.0
        grads[split] = torch.cat([g.flatten() for g in captured.values()])
    assert (grads[True] - grads[False]).norm() <= 0.03 * grads[False].norm()


def test_update_on_azr_attention_kernels_under_bf16_autocast(monkeypatch):
    """Head size 64 under bf16 autocast: the prefix pass, the members' split attention and the loner's causal pass
    run on azr's kernels (azr.kernels.prefix_attention), kept by the checkpoint rather than run again in backward, and the
    gradients equal PyTorch's flash kernel's up to bf16 rounding."""
    from azr.kernels import prefix_attention as pa

    if not pa.kernels_apply(torch.device("cpu"), torch.bfloat16, 64):
        pytest.skip("azr's attention kernels need a C++ compiler and an AVX512-BF16 CPU")
    ops = {pa.PLAIN_OP, pa.OP}

    batch = shared_prefix_batch(temperature=0.7)
    train = dataclasses.replace(TRAIN, bf16_autocast=True, micro_batch_size=3, share_prefix=True)
    grads, calls = {}, {}
    for use in (False, True):
        monkeypatch.setattr(pa, "USE_KERNELS", use)
        model, tok = tiny_model(hidden=256)
        model.config._attn_implementation = "sdpa"
        trainer = Trainer(model, tok, train, ALGO, ModelConfig(gradient_checkpointing=True))
        captured = capture_grads(trainer)
        with OpCounter(lambda func, args: func in ops) as count:
            assert trainer.step(batch)["skipped"] == 0.0
        grads[use], calls[use] = torch.cat([g.flatten() for g in captured.values()]), count.count
    # 3 micro-batches x 2 layers: a prefix pass and a member pass each for the two groups, one member pass for the loner
    assert calls[True] == 2 * (2 * 2 + 1) and calls[False] == 2 * 2
    assert (grads[True] - grads[False]).norm() <= 0.03 * grads[False].norm()


def test_non_finite_gradient_skips_the_update():
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    before = params(trainer.model)
    m = trainer.step(make_batch(n=2, advantages=[float("nan"), 1.0]))
    assert m["skipped"] == 1.0 and trainer.updates == 0
    assert all(torch.equal(before[k], v) for k, v in params(trainer.model).items())


def test_batch_validation():
    with pytest.raises(ValueError, match="temperatures"):
        TrainBatch([[1]], [[2]], [1.0], temperatures=[-0.5])
    with pytest.raises(ValueError, match="ref_logprobs"):
        TrainBatch([[1]], [[2, 3]], [1.0], ref_logprobs=[[0.0]])
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


# --- sampling temperature ---------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.7, 0.0], ids=["tempered", "greedy"])
def test_logprobs_equal_the_hf_samplers_at_its_temperature(temperature):
    """The trainer scores a sample under the distribution the hf sampler drew it from: softmax(logits / T)
    (untempered for greedy). The sampler runs a KV cache and the trainer whole sequences, both in fp32."""
    from azr.config import RolloutConfig
    from azr.rollout import Sampling
    from azr.rollout.hf import HFBackend

    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    backend = HFBackend(trainer.model, tok, RolloutConfig(bf16=False, generation_batch_size=4))
    prompts = [f"Count to {k}:" for k in (3, 5, 8)]
    out = backend.generate(prompts, Sampling(temperature=temperature, top_p=1.0, max_new_tokens=10, seed=1))
    batch = TrainBatch(
        [c.prompt_ids for c in out],
        [c.token_ids for c in out],
        [0.0] * len(out),
        temperatures=[temperature] * 3,
    )
    for got, c in zip(trainer.logprobs(batch), out, strict=True):
        torch.testing.assert_close(torch.tensor(got), torch.tensor(c.logprobs), atol=1e-4, rtol=1e-4)
    if temperature:  # the untempered scores differ: the comparison above tells the two apart
        untempered = trainer.logprobs(dataclasses.replace(batch, temperatures=None))
        assert (
            max(
                abs(a - b)
                for u, c in zip(untempered, out, strict=True)
                for a, b in zip(u, c.logprobs, strict=True)
            )
            > 1e-2
        )


@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_gradient_is_that_of_the_tempered_policy(entropy_coef):
    """Per-sequence temperatures divide the logits before the log-softmax: the gradient is REINFORCE on the
    tempered policy (the in-place division must not disturb autograd, with or without the entropy term)."""
    temps = [0.5, 0.5, 2.0, 1.0]
    batch = dataclasses.replace(make_batch(seed=2, n=4), temperatures=temps)
    algo = AlgorithmConfig(entropy_coef=entropy_coef)
    model, tok = tiny_model()
    trainer = Trainer(model, tok, dataclasses.replace(TRAIN, grad_clip=1e9), algo)
    ref_model, _ = tiny_model()
    n = sum(len(c) for c in batch.completion_ids)
    loss = 0.0
    for i, (a, c) in enumerate(zip(batch.advantages, batch.completion_ids, strict=True)):
        one = batch.subset([i])
        logits = ref_model(input_ids=torch.tensor([one.prompt_ids[0] + c])).logits[0].float() / temps[i]
        logp = torch.log_softmax(logits, -1)[len(one.prompt_ids[0]) - 1 : -1]  # (T, V)
        loss = loss - a * logp.gather(1, torch.tensor(c)[:, None]).sum() / n
        loss = loss - entropy_coef * (-(logp.exp() * logp).sum(-1)).sum() / n
    loss.backward()
    ref_norm = torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 1e9)
    assert trainer.step(batch)["grad_norm"] == pytest.approx(float(ref_norm), rel=1e-4)


# --- PPO mini-batches and epochs --------------------------------------------------------------------------


def test_one_mini_batch_one_epoch_is_a_single_on_policy_step(monkeypatch):
    """The paper's update: one optimizer step, ratio exactly 1, and no no-grad pass for old log-probs."""
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, AlgorithmConfig(entropy_coef=0.0, ppo_mini_batches=1, ppo_epochs=1))
    passes = []
    monkeypatch.setattr(trainer, "logprobs", lambda b: passes.append(b) or [])
    m = trainer.step(make_batch(n=4))
    assert passes == [] and m["logprob_seconds"] < 0.05
    assert (m["optimizer_steps"], m["clip_frac"], m["approx_kl"], trainer.updates) == (1.0, 0.0, 0.0, 1)
    assert len(trainer.last_steps) == 1


@pytest.mark.parametrize(("mini", "epochs"), [(2, 1), (1, 2), (2, 2)])
def test_later_optimizer_steps_see_the_ratio_to_the_sampling_policy(mini, epochs):
    """Old log-probs are recorded before the first step: the first step is on-policy (ratio 1 up to float
    noise), every later one is not, and each mini-batch is one optimizer step."""
    model, tok = tiny_model()
    trainer = Trainer(
        model, tok, TRAIN, AlgorithmConfig(entropy_coef=0.0, ppo_mini_batches=mini, ppo_epochs=epochs)
    )
    m = trainer.step(make_batch(seed=5, n=6, advantages=[1.0, -1.0, 2.0, 0.5, -0.5, 1.5]))
    steps = trainer.last_steps
    assert len(steps) == mini * epochs == m["optimizer_steps"] == trainer.updates
    assert abs(steps[0]["approx_kl"]) < 1e-5
    assert all(abs(s["approx_kl"]) > 1e-4 for s in steps[1:])
    assert m["approx_kl"] == pytest.approx(sum(s["approx_kl"] for s in steps) / len(steps))
    assert m["logprob_seconds"] > 0


def test_each_mini_batch_is_token_mean_normalised_on_its_own():
    """The first of two strided mini-batches (sequences 0, 2, 4) gets the gradient a lone step on them would."""
    batch = make_batch(seed=6, n=5)
    model, tok = tiny_model()
    two = Trainer(model, tok, TRAIN, AlgorithmConfig(entropy_coef=0.0, ppo_mini_batches=2))
    grads: list[dict[str, torch.Tensor]] = []
    named = list(two.model.named_parameters())
    two.optimizer.register_step_pre_hook(lambda *_: grads.append({k: p.grad.clone() for k, p in named}))
    two.step(batch)
    model, tok = tiny_model()
    one = Trainer(model, tok, TRAIN, ALGO)
    want = capture_grads(one)
    one.step(batch.subset([0, 2, 4]))
    for k in want:
        torch.testing.assert_close(grads[0][k], want[k], atol=1e-6, rtol=1e-4)


def test_clipping_acts_on_a_crafted_batch():
    """Old log-probs 1 nat below the current ones (ratio e = 2.7 > 1.2) and positive advantages: every token is
    clipped, so no gradient flows and (no weight decay) AdamW leaves the weights alone."""
    batch = make_batch(seed=7, n=3, advantages=[1.0, 0.5, 2.0])
    model, tok = tiny_model()
    trainer = Trainer(model, tok, dataclasses.replace(TRAIN, weight_decay=0.0), ALGO)
    old = [[x - 1.0 for x in lp] for lp in trainer.logprobs(batch)]
    before = params(trainer.model)
    m = trainer.step(dataclasses.replace(batch, old_logprobs=old))
    assert m["clip_frac"] == pytest.approx(1.0) and m["approx_kl"] == pytest.approx(-1.0, abs=1e-4)
    assert m["grad_norm"] == 0.0
    assert all(torch.equal(before[k], v) for k, v in params(trainer.model).items())


def test_ppo_split_is_strided_and_disjoint():
    from azr.training.batching import ppo_split

    assert ppo_split([0, 1, 2, 3, 4], 2) == [[0, 2, 4], [1, 3]]
    assert ppo_split([3, 5], 4) == [[3], [5]]  # never an empty mini-batch
    assert ppo_split(list(range(7)), 1) == [list(range(7))]


# --- KL to the initial policy -----------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_kl_to_the_initial_policy(lora):
    """kl == 0 while the policy is the reference, > 0 after an update, and the loss carries kl_coef * kl."""
    model, tok = tiny_model()
    algo = AlgorithmConfig(entropy_coef=0.0, kl_coef=0.5)
    trainer = Trainer(model, tok, TRAIN, algo, ModelConfig(lora=lora, lora_rank=4, lora_alpha=8))
    assert (trainer.ref_model is None) == lora
    batch = make_batch(seed=8, n=4, advantages=[1.0, 1.0, -1.0, 2.0])
    first = trainer.step(batch)
    assert first["kl"] == pytest.approx(0.0, abs=1e-9)
    second = trainer.step(batch)
    assert second["kl"] > 1e-6
    assert second["loss"] == pytest.approx(second["pg_loss"] + 0.5 * second["kl"], rel=1e-5)
    ref = trainer.reference_logprobs(batch)
    fresh, _ = tiny_model()
    for got, want in zip(
        ref, naive_logprobs(fresh, batch), strict=True
    ):  # the reference is still the initial model
        torch.testing.assert_close(torch.tensor(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:training.bf16_autocast")
def test_full_reference_is_frozen_and_stored_in_bf16_under_autocast():
    model, tok = tiny_model()
    trainer = Trainer(
        model, tok, dataclasses.replace(TRAIN, bf16_autocast=True), AlgorithmConfig(kl_coef=0.1)
    )
    ref = list(trainer.ref_model.parameters())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in ref)
    assert not trainer.ref_model.training
    assert Trainer(*tiny_model(), TRAIN, ALGO).ref_model is None  # no copy without a KL term


def test_every_returned_metric_is_documented():
    """Every key step() returns is in the trainer's METRICS, and the loop's train/ names are in docs/metrics.md."""
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, AlgorithmConfig(entropy_coef=0.01, kl_coef=0.1, ppo_mini_batches=2))
    out = trainer.step(make_batch(n=4))
    assert set(out) <= set(TRAINER_METRICS)
    assert all(f"train/{k}" in RUN_METRICS for k in TRAINER_METRICS)
