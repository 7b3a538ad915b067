"""On a CUDA device: a self-play step and its update with each backend, and the trainer with bf16 weights.

Marked ``gpu`` (deselected by default, skipped without CUDA): ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from azr.config import AlgorithmConfig, TrainingConfig
from azr.models import tiny_model
from azr.rollout import make_backend
from azr.selfplay.step import SelfPlay
from azr.training.trainer import TrainBatch, Trainer
from selfplay_helpers import make_cfg, seeded_store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _step_and_update(tmp_path, executor, backend_name: str) -> None:
    """A real step (generation on the GPU, sandbox on the CPU), then the update; every tensor stays on CUDA."""
    model, tok = tiny_model(hidden=256, layers=2)
    cfg = make_cfg(
        rollout={"backend": backend_name, "max_new_tokens_propose": 64, "max_new_tokens_solve": 32}
    )
    trainer = Trainer(model, tok, TrainingConfig(device="cuda", lr=1e-3), AlgorithmConfig(), cfg.model)
    backend = make_backend(backend_name, trainer.model, tok, cfg.rollout)
    sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path, executor), tok, seed=0)
    result = sp.step(1)
    samples = [s for s in result.samples if s.completion.token_ids]
    assert samples and all(p.device.type == "cuda" for p in trainer.model.parameters())
    before = [p.detach().clone() for p in trainer.params]
    batch = TrainBatch(
        [s.completion.prompt_ids for s in samples],
        [s.completion.token_ids for s in samples],
        [s.advantage or 1.0 for s in samples],  # a constant group has zero advantages: make the step move
        temperatures=[s.temperature for s in samples],
    )
    metrics = trainer.step(batch)
    backend.update_weights(trainer.model)
    assert metrics["optimizer_steps"] == 1.0
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.params, strict=True))


def test_selfplay_step_on_cuda_with_hf(tmp_path, executor):
    _step_and_update(tmp_path, executor, "hf")


def test_selfplay_step_on_cuda_with_vllm(tmp_path, executor):
    pytest.importorskip("vllm")
    _step_and_update(tmp_path, executor, "vllm")


def test_trainer_with_bf16_weights_and_autocast():
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model, tok = tiny_model()
    model = model.to(torch.bfloat16)
    trainer = Trainer(
        model, tok, TrainingConfig(device="cuda", lr=1e-2, bf16_autocast=True), AlgorithmConfig()
    )
    batch = TrainBatch([[5, 6, 7], [8, 9]], [[10, 11, 12], [13]], [1.0, -0.5], temperatures=[1.0, 0.7])
    before = [p.detach().clone() for p in trainer.params]
    metrics = trainer.step(batch)
    assert trainer.bf16 and all(p.dtype == torch.bfloat16 for p in trainer.params)
    assert metrics["skipped"] == 0.0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.params, strict=True))


def _qwen2(layers: int = 2):
    """A tiny random Qwen2 (the paper's architecture: biased q/k/v, grouped keys/values) on CUDA."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tok = tiny_model()
    config = Qwen2Config(hidden_size=128, intermediate_size=352, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tok) + 64, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config), tok


def test_qwen2_checkpointed_update_with_the_chunked_head_matches_the_plain_one():
    """Layer-by-layer checkpointing and the GPU-tiled LM head give the plain update's log-probs on CUDA."""
    from azr.config import ModelConfig

    batch = TrainBatch(
        [[5, 6, 7, 8]] * 3, [[9, 10, 11], [12], [13, 14]], [1.0, -0.5, 0.2], temperatures=[0.7] * 3
    )
    got = []
    for ckpt in (False, True):
        model, tok = _qwen2()
        trainer = Trainer(model, tok, TrainingConfig(device="cuda", bf16_autocast=False), AlgorithmConfig(),
                          ModelConfig(gradient_checkpointing=ckpt))  # fmt: skip
        assert trainer.layerwise == ckpt
        got.append(trainer.logprobs(batch))
        assert trainer.step(batch)["skipped"] == 0.0
    for a, b in zip(*got, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_resume_on_cuda_is_exact(tmp_path):
    from azr.training import checkpoint

    batch = TrainBatch([[5, 6, 7]], [[8, 9, 10]], [1.0], temperatures=[1.0])
    training = TrainingConfig(device="cuda", lr=1e-2, bf16_autocast=False)
    model, tok = _qwen2()
    first = Trainer(model, tok, training, AlgorithmConfig())
    first.step(batch)
    path = checkpoint.save(tmp_path, 1, first)
    first.step(batch)
    resumed = Trainer(*_qwen2(), training, AlgorithmConfig())
    checkpoint.load(path, resumed)
    assert all(
        s.device.type == "cuda" for st in resumed.optimizer.state.values() for s in st.values() if s.dim()
    )
    resumed.step(batch)
    for a, b in zip(first.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_memory_check_reads_the_gpu():
    from azr.config import Config
    from azr.training import memory

    model, tok = _qwen2()
    trainer = Trainer(model, tok, TrainingConfig(device="cuda"), AlgorithmConfig())
    est = memory.estimate(trainer.model, Config(), sum(p.numel() for p in trainer.params), device="cuda")
    assert memory.check(est, "cuda", resident=est.weights) is None
    huge = memory.Estimate(0, 0, 0, 0, activations=10**15)
    with pytest.raises(Exception, match="GiB free"):
        memory.check(huge, "cuda", resident=0)


def test_azr_train_and_eval_end_to_end_on_cuda(tmp_path):
    """``azr train`` (one step, scripted replies) and ``azr eval --limit 4`` as a user runs them, on CUDA."""
    import subprocess
    import sys

    model, tok = _qwen2()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    common = [sys.executable, "-m", "azr"]
    ev = subprocess.run([*common, "eval", "--model", str(tmp_path / "m"), "--bench", "probe", "--limit", "4",
                         "--device", "cuda"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert ev.returncode in (0, 1), ev.stderr[-2000:]  # 1: no result scored, not a crash
    tr = subprocess.run([*common, "train", "--model", str(tmp_path / "m"), "--steps", "1", "--run-dir",
                         str(tmp_path / "run"), "--training.device=cuda", "--selfplay.n_seed_tasks=2",
                         "--rollout.max_new_tokens_propose=32", "--rollout.max_new_tokens_solve=16"],
                        capture_output=True, text=True, timeout=600)  # fmt: skip
    assert tr.returncode == 0, tr.stderr[-2000:]
    assert (tmp_path / "run" / "metrics.jsonl").is_file()
