"""Checkpoints: exact resume (parameters, optimizer, RNG), atomic layout, pruning, LoRA, from_pretrained."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from azr.config import AlgorithmConfig, ModelConfig, TrainingConfig
from azr.models import tiny_model
from azr.training import checkpoint
from azr.training.trainer import TrainBatch, Trainer

TRAIN = TrainingConfig(lr=1e-2, bf16_autocast=False, micro_batch_size=2, device="cpu")
ALGO = AlgorithmConfig(entropy_coef=0.001)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Tiny models run faster on one thread, and the test machine is shared."""


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_batch() -> TrainBatch:
    """A batch drawn from the *global* RNGs (torch, Python, NumPy), as rollouts would: resume must restore them."""
    n = random.randint(2, 4)
    prompts = [torch.randint(3, 300, (int(np.random.randint(1, 8)),)).tolist() for _ in range(n)]
    replies = [torch.randint(3, 300, (random.randint(1, 8),)).tolist() for _ in range(n)]
    return TrainBatch(prompts, replies, torch.randn(n).tolist())


PPO_KL = AlgorithmConfig(entropy_coef=0.001, kl_coef=0.1, ppo_mini_batches=2)
"""Several optimizer steps per batch and a KL term: more state that resume must get right."""


def build(model_cfg: ModelConfig | None = None, seed: int = 0, algo: AlgorithmConfig = ALGO) -> Trainer:
    model, tok = tiny_model(seed=seed)
    return Trainer(model, tok, TRAIN, algo, model_cfg)


def run_steps(trainer: Trainer, n: int) -> None:
    for _ in range(n):
        trainer.step(random_batch())


def assert_same_state(a: Trainer, b: Trainer) -> None:
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    assert pa.keys() == pb.keys()
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=1e-6, rtol=0)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i, state in sa["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(value, sb["state"][i][key], atol=1e-6, rtol=0)
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


@pytest.mark.parametrize(
    ("lora", "algo"), [(False, ALGO), (True, ALGO), (False, PPO_KL)], ids=["full", "lora", "full-ppo-kl"]
)
def test_resume_is_exact(tmp_path, lora, algo):
    cfg = ModelConfig(lora=lora, lora_rank=4, lora_alpha=8)
    seed_all(123)
    straight = build(cfg, algo=algo)
    run_steps(straight, 4)
    probe = torch.randn(3)  # the RNG stream after 4 steps

    seed_all(123)
    first = build(cfg, algo=algo)
    run_steps(first, 2)
    path = checkpoint.save(tmp_path, 2, first, {"store_step": 2}, {"training": {"lr": 0.01}}, keep_last=2)
    del first
    seed_all(999)  # a fresh process: different RNG state, different initial weights
    # A LoRA run reloads the same base model; a KL run the same initial model (its reference).
    resumed = build(cfg, seed=0 if lora or algo.kl_coef else 7, algo=algo)
    step, extra = checkpoint.load(path, resumed)
    assert (step, extra) == (2, {"store_step": 2})
    run_steps(resumed, 2)
    assert_same_state(straight, resumed)
    steps_per_batch = algo.ppo_mini_batches * algo.ppo_epochs
    assert resumed.updates == straight.updates == 4 * steps_per_batch
    torch.testing.assert_close(torch.randn(3), probe, atol=0, rtol=0)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_resumed_run_keeps_the_initial_model_as_kl_reference(tmp_path, lora):
    """The reference is not saved: a trainer rebuilt from the run's initial model and loaded from a checkpoint
    gives the same reference log-probs as the trainer that saved it, and a different initial model is refused."""
    cfg = ModelConfig(lora=lora, lora_rank=4, lora_alpha=8)
    seed_all(5)
    trainer = build(cfg, algo=PPO_KL)
    run_steps(trainer, 2)
    probe = random_batch()
    path = checkpoint.save(tmp_path, 2, trainer, {}, {}, keep_last=1)
    resumed = build(cfg, algo=PPO_KL)
    checkpoint.load(path, resumed)
    for a, b in zip(resumed.reference_logprobs(probe), trainer.reference_logprobs(probe), strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=0, rtol=0)
    for a, b in zip(resumed.logprobs(probe), trainer.logprobs(probe), strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=0)
    if not lora:
        with pytest.raises(RuntimeError, match="KL reference"):
            checkpoint.load(path, build(cfg, seed=7, algo=PPO_KL))


def test_layout_latest_and_pruning(tmp_path):
    trainer = build()
    assert checkpoint.latest(tmp_path) is None
    for step in (5, 10, 15):
        trainer.step(random_batch())
        checkpoint.save(tmp_path, step, trainer, {"step": step}, {"a": 1}, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-000010", "step-000015"]  # pruned, and no temp dirs left behind
    latest = checkpoint.latest(tmp_path)
    assert latest == tmp_path / "checkpoints" / "step-000015"
    files = {p.name for p in latest.iterdir()}
    assert {
        "model",
        "optimizer.pt",
        "scheduler.pt",
        "rng.pt",
        "rng.json",
        "run_config.json",
        "state.json",
    } <= files
    assert (latest / "model" / "model.safetensors").is_file()
    checkpoint.save(tmp_path, 15, trainer, {"again": True}, {}, keep_last=2)  # re-saving a step replaces it
    assert checkpoint.load(checkpoint.latest(tmp_path), build())[1] == {"again": True}


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    trainer = build()
    checkpoint.save(tmp_path, 1, trainer, {}, {}, keep_last=3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, trainer, {}, {}, keep_last=3)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]
    assert checkpoint.latest(tmp_path).name == "step-000001"


def test_saved_model_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = build()
    trainer.step(random_batch())
    path = checkpoint.save(tmp_path, 1, trainer, {}, {}, keep_last=1)
    loaded = AutoModelForCausalLM.from_pretrained(path / "model")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, trainer.model(input_ids=ids).logits)


def test_mismatched_trainer_and_bad_extra_state(tmp_path):
    trainer = build()
    path = checkpoint.save(tmp_path, 1, trainer, {}, {}, keep_last=1)
    with pytest.raises(RuntimeError, match="lora"):
        checkpoint.load(path, build(ModelConfig(lora=True, lora_rank=4)))
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, 2, trainer, {"x": object()}, {}, keep_last=1)
    assert checkpoint.latest(tmp_path) == path


@pytest.mark.slow
def test_default_model_checkpoint_round_trip(tmp_path):
    """The real default model: one update, save, reload with from_pretrained, resume into a fresh trainer."""
    from transformers import AutoModelForCausalLM

    from azr.models import load_model

    model, tok = load_model("smollm2-135m")
    trainer = Trainer(model, tok, TRAIN, ALGO)
    batch = TrainBatch([[1, 2, 3, 4]], [[5, 6, 7]], [1.0])
    trainer.step(batch)
    path = checkpoint.save(tmp_path, 1, trainer, {"store": "x"}, {}, keep_last=1)
    loaded = AutoModelForCausalLM.from_pretrained(path / "model")
    resumed = Trainer(*load_model("smollm2-135m"), TRAIN, ALGO)
    assert checkpoint.load(path, resumed) == (1, {"store": "x"})
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        want = trainer.model(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, want)
        torch.testing.assert_close(resumed.model(input_ids=ids).logits, want)


def test_optimizer_state_is_read_to_the_cpu(tmp_path, monkeypatch):
    """Resuming never loads the whole AdamW state onto the training device (under FSDP every GPU held all of it
    before sharding: 61 GB for 7B); the optimizer moves each tensor to its parameter's device itself. Under FSDP
    the file is memory-mapped so the ranks of a machine share its pages (tests/test_fsdp.py resumes over gloo)."""
    trainer = build()
    run_steps(trainer, 1)
    path = checkpoint.save(tmp_path, 1, trainer)
    calls = []
    real = torch.load

    def spy(file, *args, **kw):
        calls.append((Path(file).name, kw.get("map_location"), kw.get("mmap", False)))
        return real(file, *args, **kw)

    monkeypatch.setattr(checkpoint.torch, "load", spy)
    checkpoint.load(path, build())
    assert ("optimizer.pt", "cpu", False) in calls
    state = checkpoint._optimizer_state(path / "optimizer.pt", sharded=True)
    assert calls[-1] == ("optimizer.pt", "cpu", True)
    assert state["state"] and all(
        t.device.type == "cpu" for s in state["state"].values() for t in s.values() if torch.is_tensor(t)
    )
