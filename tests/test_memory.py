"""The start-up memory estimate: the per-parameter arithmetic of the README, and the refusal on a GPU."""

from __future__ import annotations

import pytest
import torch

from azr.config import from_dict
from azr.errors import AzrError
from azr.models import tiny_model
from azr.training import memory


def test_full_fine_tuning_is_16_bytes_a_parameter_and_lora_keeps_the_base_only(tiny):
    model, _ = tiny
    n = sum(p.numel() for p in model.parameters())
    cfg = from_dict({"model": {"gradient_checkpointing": True}})
    est = memory.estimate(model, cfg, trainable=n)
    assert est.weights + est.gradients + est.optimizer == 16 * n
    assert est.reference == 0 and est.activations > 0
    lora = memory.estimate(model.to(torch.bfloat16), from_dict({"model": {"lora": True}}), trainable=1000)
    assert (lora.weights, lora.gradients, lora.optimizer) == (2 * n, 2 * 1000, 4 * 1000)
    model.float()
    no_ckpt = memory.estimate(model, from_dict({}), trainable=n)
    assert no_ckpt.activations > est.activations  # checkpointing keeps 4H instead of 34H per token and layer
    assert "memory estimate:" in est.line() and "AdamW" in est.line()


def test_fsdp_keeps_a_shard_of_everything_plus_the_gathered_weights():
    # Its own copy: the session's tiny model must stay fp32 for the tests after this one.
    model, _ = tiny_model()
    n = sum(p.numel() for p in model.parameters())
    est = memory.estimate(model.float(), from_dict({}), trainable=n, shards=8)
    assert est.weights == 4 * n + 4 * n // 8
    assert (est.gradients, est.optimizer) == (4 * n // 8, 8 * n // 8)
    bf16 = memory.estimate(model.to(torch.bfloat16), from_dict({}), trainable=n, shards=8, master_bytes=4)
    assert bf16.weights == 2 * n + 4 * n // 8, "gathered in bf16, fp32 master shards"
    assert bf16.weights + bf16.gradients + bf16.optimizer == 2 * n + 16 * n // 8


def test_a_gpu_that_cannot_hold_the_run_stops_it_with_what_to_change(monkeypatch):
    model, _ = tiny_model()
    est = memory.estimate(
        model, from_dict({}), trainable=10**9
    )  # a billion trainable: 12 GB of grads + AdamW
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (2 * memory.GB, 80 * memory.GB))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(AzrError, match="micro_batch_size"):
        memory.check(est, "cuda", resident=est.weights)
    assert memory.check(memory.estimate(model, from_dict({}), 10), "cpu", resident=0) is None


def test_activations_of_the_7b_recipe_by_hand():
    """Qwen2.5-7B under configs/paper-7b.toml on a GPU (H = 3584, I = 18944, K = 2 x 4 x 128 = 1024, 28 layers,
    V = 152064; one sequence of 6144 + 8096 = 14240 tokens; fp32 weights, bf16 autocast):

    - kept per layer and token: the fp32 input 4H + the bf16 attention output 2H = 21504 B; x 28 x 14240;
    - the layer replayed: 2 x (5H + K + 4I) + 16H = 189440 + 57344 = 246784 B; x 14240;
    - LM head: one 1024 x 16384 fp32 tile twice, + 8096 x 16384 bf16 logit gradients.
    """
    from types import SimpleNamespace

    from azr.config import load
    from azr.training.memory import activation_bytes

    q7 = SimpleNamespace(hidden_size=3584, num_hidden_layers=28, vocab_size=152064, num_attention_heads=28,
                         num_key_value_heads=4, intermediate_size=18944)  # fmt: skip
    cfg = load("configs/paper-7b.toml")
    want = 21504 * 28 * 14240 + 246784 * 14240 + 1024 * 16384 * 8 + 8096 * 16384 * 2
    assert activation_bytes(q7, cfg, "cuda", weight_bytes=4) == want  # 11.6 GiB
    bf16_weights = activation_bytes(q7, cfg, "cuda", weight_bytes=2)
    assert want - bf16_weights == 2 * 3584 * 28 * 14240, "a bf16 residual stream keeps 2H a layer, not 4H"
