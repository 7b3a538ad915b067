"""On a CUDA device: a self-play step and its update with each backend, and the trainer with bf16 weights.

Marked ``gpu`` (deselected by default, skipped without CUDA): ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from azr.config import AlgorithmConfig, TrainingConfig
from azr.models import tiny_model
from azr.rollout import make_backend
from azr.selfplay import SelfPlay
from azr.trainer import TrainBatch, Trainer
from test_selfplay import make_cfg, seeded_store

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
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.params))


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
    assert any(not torch.equal(b, p) for b, p in zip(before, trainer.params))
