"""Setting up the policy for training: device, AdamW kernel, LoRA, activation checkpointing, a frozen reference copy
and a cheap fingerprint of the weights. Used by :class:`azr.training.trainer.Trainer`; no training logic here."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from azr.config import ModelConfig

__all__ = [
    "apply_lora",
    "enable_checkpointing",
    "frozen_copy",
    "fused_adamw",
    "resolve_device",
    "weights_checksum",
]


def resolve_device(name: str) -> torch.device:
    """``training.device``: ``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fused_adamw(device: torch.device) -> bool | None:
    """The fused AdamW kernel on CPU and CUDA: on a 2-core CPU it steps 135M parameters about 5x faster than the
    per-parameter loop and 3x faster than ``foreach`` (which materialises whole-model temporaries)."""
    return True if device.type in ("cpu", "cuda") else None  # None: torch's default


def apply_lora(model: Any, model_cfg: ModelConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=model_cfg.lora_rank,
        lora_alpha=model_cfg.lora_alpha,
        target_modules="all-linear",
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing, under its transformers 5 name when it exists."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def frozen_copy(model: Any, dtype: torch.dtype | None) -> Any:
    """A no-grad, eval-mode copy of ``model`` on its device, stored in ``dtype`` when given."""
    ref = copy.deepcopy(model)
    if dtype is not None:
        ref = ref.to(dtype)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def weights_checksum(model: Any) -> float:
    """A cheap fingerprint of a model's weights (sum plus sum of squares, in float64), to tell two models apart.

    Not a cryptographic hash: it detects a different or modified model, not a forged one.
    """
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for p in model.parameters():
            x = p.detach().double()
            total += (x.sum() + x.square().sum()).cpu()
    return float(total)
