"""The start-up memory check: what one training process needs, against what its device has.

Per parameter, with AdamW (two moment buffers, kept in fp32 by torch for fp32 parameters):

==========================  ============  ============
part                        fp32 weights  bf16 weights
==========================  ============  ============
weights                     4 B           2 B
gradients (trainable only)  4 B           2 B
AdamW moments (trainable)   8 B           4 B
KL reference (kl_coef > 0)  2-4 B         2 B
==========================  ============  ============

Full fine-tuning in fp32 is 16 bytes a parameter (7B: 112 GB); every data-parallel process holds all of it.
Under ``training.fsdp`` (:mod:`azr.training.sharding`) each of W processes keeps 1/W of the weights, gradients and AdamW
moments, plus the whole weights gathered between updates for generation (in bf16 when training in bf16):
``2 + (4 + 4 + 8) / W`` bytes a parameter (7B on 8 processes: 30 GB instead of 112). LoRA trains ~0.5% of the parameters, so the base weights dominate.

Activations of one micro-batch (``training.micro_batch_size`` sequences of up to ``max_prompt_tokens +
max_new_tokens`` tokens; ``a`` bytes per activation, 2 under bf16 autocast; attention without the quadratic term as
in SDPA). Per token, with hidden size H, MLP width I and key + value width K:

- one layer's intermediates while it runs (forward, or its replay in backward under checkpointing): in the
  activation dtype the normed inputs of attention and MLP, the queries, the attention output and the output
  projection's (5H), the keys and values (K) and the MLP's gate, up, SiLU and product (4I); in fp32 the residual
  sums and RMSNorm's fp32 copies (4 x 4H). For Qwen2.5-7B (I = 5.3H) that is 69H bytes, where Korthikanti et
  al.'s ``34 * H`` (arXiv 2205.05198) assumes a 4H MLP without a gate;
- without checkpointing every layer keeps all of that;
- with checkpointing (:mod:`azr.training.layerwise`) each layer keeps its input, in the residual stream's dtype (the
  weights' dtype: fp32 master weights keep an fp32 stream under autocast), and the attention output (``a * H``);
  on a CPU where azr's kernels apply also the key/value projections' outputs (:func:`azr.training.layerwise.kept_kv_width`;
  on a GPU it keeps none);
- the fp32 logits of the reply tokens (``4 * V`` bytes each, twice for the backward); with checkpointing one tile
  at a time (:func:`azr.training.trainer.head_tile`: 128 x 4096 on a CPU, 1024 x 16384 on a GPU) and one vocabulary block's
  logit gradients for all reply tokens.

For 7B (``configs/paper-7b.toml``: 14,240 tokens, fp32 weights, bf16 autocast) that is 8.0 GiB of kept layer
inputs and attention outputs, 3.3 GiB for the layer being replayed and 0.4 GiB for the LM head: ~11.6 GiB. It is
an estimate for a start-up check, not a measurement: it ignores allocator slack.

On CUDA the check raises :class:`AzrError` when the estimate plus the vLLM share
(``rollout.vllm_gpu_memory_utilization`` of the GPU) exceeds the free memory (``torch.cuda.mem_get_info``). On a
CPU it compares with the available RAM and only warns: the kernel's page cache and swap make a hard limit wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.errors import AzrError

GB = 1024**3


@dataclass(frozen=True)
class Estimate:
    """Bytes one training process needs, by part."""

    weights: int
    gradients: int
    optimizer: int
    reference: int
    activations: int
    vllm: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.reference + self.activations + self.vllm

    def line(self) -> str:
        parts = [("weights", self.weights), ("grads", self.gradients), ("AdamW", self.optimizer),
                 ("KL ref", self.reference), ("activations", self.activations), ("vLLM", self.vllm)]  # fmt: skip
        shown = ", ".join(f"{name} {n / GB:.1f}" for name, n in parts if n)
        return f"memory estimate: {self.total / GB:.1f} GiB ({shown})"


def estimate(
    model: Any,
    cfg: Any,
    trainable: int,
    vllm_bytes: int = 0,
    shards: int = 1,
    master_bytes: int = 0,
    device: str = "cpu",
) -> Estimate:
    """The estimate for the trainer's ``model`` under run config ``cfg``; ``trainable``: the parameters the
    optimizer updates; ``vllm_bytes``: the GPU memory the vLLM engine will take; ``shards``: the processes FSDP
    shards over (1: none); ``master_bytes``: bytes of a trainable parameter when they differ from the model's
    (FSDP gathers fp32 shards as bf16); ``device``: the training device's type."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    per = master_bytes or (params[0].element_size() if params else 4)
    reference = 0
    if cfg.algorithm.kl_coef > 0 and not cfg.model.lora:
        reference = total * (2 if cfg.training.bf16_autocast is not False else per)
    return Estimate(
        weights=weight_bytes + (total * per // shards if shards > 1 else 0),  # the gathered copy + the shard
        gradients=trainable * per // shards,
        optimizer=trainable * 2 * per // shards,
        reference=reference,
        activations=activation_bytes(model.config, cfg, device, params[0].element_size() if params else 4),
        vllm=vllm_bytes,
    )


def layer_bytes(config: Any, act: int) -> int:
    """Bytes per token of one layer's intermediates while it runs, activations of ``act`` bytes (module
    docstring)."""
    hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
    width = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv = 2 * int(getattr(config, "num_key_value_heads", None) or heads) * head_dim
    return act * (5 * hidden + kv + 4 * width) + 4 * 4 * hidden


def activation_bytes(config: Any, cfg: Any, device: str = "cpu", weight_bytes: int = 4) -> int:
    """Activations of one micro-batch on a ``device`` of that type, the weights ``weight_bytes`` bytes each
    (see the module docstring)."""
    hidden, layers = int(config.hidden_size), int(config.num_hidden_layers)
    vocab = int(config.vocab_size)
    act = 2 if cfg.training.bf16_autocast is not False or weight_bytes == 2 else 4
    r = cfg.rollout
    reply = max(r.max_new_tokens_propose, r.max_new_tokens_solve)
    tokens = cfg.training.micro_batch_size * (r.max_prompt_tokens + reply)
    # micro_batch_tokens: more rows in one micro-batch, within a token budget after the shared prefix
    if cfg.training.share_prefix and cfg.training.micro_batch_tokens:
        tokens = max(tokens, cfg.training.micro_batch_tokens + r.max_prompt_tokens)
    logit_rows = max(cfg.training.micro_batch_size * reply, cfg.training.micro_batch_tokens)
    if not cfg.model.gradient_checkpointing:
        return int(tokens * layers * layer_bytes(config, act) + logit_rows * vocab * 4 * 2)
    import torch

    from azr.training.layerwise import kept_kv_width
    from azr.training.lm_head import head_tile

    kv = act * kept_kv_width(config) if device == "cpu" else 0
    kept = tokens * layers * (weight_bytes * hidden + act * hidden + kv) + tokens * layer_bytes(config, act)
    # the LM head runs (rows x block) fp32 tiles; its backward holds one block's logit gradients for every row
    rows, block = head_tile(torch.device(device))
    return int(
        kept + min(logit_rows, rows) * min(vocab, block) * 4 * 2 + logit_rows * min(vocab, block) * act
    )


def available_ram() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check(est: Estimate, device: str, resident: int) -> str | None:
    """Raise on CUDA when ``est`` cannot fit; return a warning (or None) on a CPU.

    ``resident``: the bytes of ``est`` already allocated (the weights and the KL reference are loaded when this
    runs), left out of the comparison with the free memory.
    """
    if device == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info()
        if est.total - resident > free:
            raise AzrError(
                f"{est.line()}; GPU {torch.cuda.current_device()} has {free / GB:.1f} of {total / GB:.1f} GiB free "
                "after the weights. Lower training.micro_batch_size or rollout.vllm_gpu_memory_utilization, or set "
                'model.gradient_checkpointing = true, model.lora = true or model.dtype = "bf16"'
            )
        return None
    ram = available_ram()
    if ram is not None and est.total - resident > ram:
        return f"{est.line()} is more than the {ram / GB:.1f} GiB of RAM available; the run may swap or be killed"
    return None


def status_kib(pid: int | str, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS``, ``VmHWM``, ...); 0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (the sandbox workers and what they run), from ``/proc``; [] elsewhere."""
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        children.setdefault(status_kib(name, "PPid"), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def process_memory(pid: int | None = None) -> dict[str, float]:
    """Resident memory of this process (now and its peak) and of its descendants, in GiB, and how many
    descendants there are: the ``perf/memory/*`` and ``perf/processes`` metrics; {} where ``/proc`` is missing."""
    import os

    pid = pid or os.getpid()
    rss = status_kib(pid, "VmRSS")
    if not rss:
        return {}
    kids = descendants(pid)
    gib = 1024**2  # KiB in a GiB
    return {
        "perf/memory/rss_gib": rss / gib,
        "perf/memory/peak_gib": status_kib(pid, "VmHWM") / gib,
        "perf/memory/workers_gib": sum(status_kib(k, "VmRSS") for k in kids) / gib,
        "perf/processes": float(len(kids)),
    }
