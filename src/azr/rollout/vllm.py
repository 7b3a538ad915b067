"""The vLLM backend (optional extra ``azr[vllm]``): the same contract on a GPU, imported only when constructed.

- The engine is ``vllm.LLM(model=path)``. Without a ``model_path`` the trainer's model and tokenizer are saved to
  a temporary directory first (the engine loads from disk).
- Sampling maps onto ``SamplingParams(temperature, top_p, max_tokens, stop, n, seed, logprobs=0,
  include_stop_str_in_output=True)``; prompts go in as token ids (tokenised here with ``add_special_tokens=False``).
- Log-probs: what vLLM returns for the sampled token. By default that is the *raw* model distribution (before
  temperature and top-p); the trainer recomputes its own in torch, so this only matters for logging.
- ``finish_reason``: vLLM's ``"length"`` stays ``"length"``; ``"stop"`` becomes ``"stop"`` when a stop string
  matched (``stop_reason`` is a string) and ``"eos"`` otherwise.
- :meth:`VLLMBackend.update_weights` pushes the new state dict into the running engine in place when the worker
  lives in this process (we set ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` for that, as TRL's colocate mode does), and
  resets the prefix cache (its KV blocks came from the old weights). When no in-process model can be reached (a
  vLLM layout we do not know), it falls back to saving the weights to a temporary directory and re-creating the
  engine: slow (seconds to minutes) but always correct.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

from azr.config import RolloutConfig
from azr.errors import AzrError
from azr.rollout.base import Completion, ProgressFn, Sampling, truncate_at_stop

INSTALL_HINT = "the vllm backend needs the vllm extra: pip install 'azr[vllm]'"

_MODEL_PATHS = (  # where the in-process nn.Module sits, newest vLLM layouts first
    ("llm_engine", "model_executor", "driver_worker", "worker", "model_runner", "model"),
    ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"),
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise AzrError(INSTALL_HINT) from None
    return vllm


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
        self.path = model_path or self._save(model)
        self.llm = self._engine()
        self.last_stats: dict[str, float] = {}

    def _save(self, model: Any) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="azr-vllm-")
        model.save_pretrained(self._tmp.name, safe_serialization=True)
        self.tokenizer.save_pretrained(self._tmp.name)
        return self._tmp.name

    def _engine(self) -> Any:
        return self._vllm.LLM(
            model=self.path,
            gpu_memory_utilization=self.cfg.vllm_gpu_memory_utilization,
            dtype="auto",
            enable_prefix_caching=self.cfg.share_prefix,  # vLLM's own form of the shared prompt heads
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
        import time

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

    def _inprocess_model(self) -> Any:
        for path in _MODEL_PATHS:
            obj: Any = self.llm
            for attr in path:
                obj = getattr(obj, attr, None)
                if obj is None:
                    break
            if obj is not None and hasattr(obj, "load_weights"):
                return obj
        return None

    def update_weights(self, model: Any) -> None:
        """Load ``model``'s weights into the engine (in place if possible, else re-create it from a temp dir)."""
        target = self._inprocess_model()
        if target is not None:
            target.load_weights(model.state_dict().items())
            reset = getattr(self.llm, "reset_prefix_cache", None)
            if reset is not None:
                reset()
            return
        del self.llm
        self.path = self._save(model)
        self.llm = self._engine()
