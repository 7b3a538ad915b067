"""Generation backends behind one protocol: ``hf`` (default, CPU or one GPU), ``vllm`` (extra), ``scripted`` (fake).

```python
from azr.rollout import Sampling, make_backend
backend = make_backend("hf", model, tokenizer, cfg.rollout)
completions = backend.generate(prompts, Sampling(temperature=1.0, max_new_tokens=256, n=8, seed=0))
backend.update_weights(model)  # after every optimizer step
```

Importing this package pulls in neither torch nor transformers nor vLLM; the backends are imported when built.
"""

from __future__ import annotations

from typing import Any

from azr.config import RolloutConfig
from azr.errors import AzrError
from azr.rollout.base import Backend, Completion, ProgressFn, Sampling, find_stop, truncate_at_stop
from azr.rollout.scripted import ScriptedBackend

__all__ = [
    "Backend",
    "Completion",
    "ProgressFn",
    "Sampling",
    "ScriptedBackend",
    "find_stop",
    "make_backend",
    "truncate_at_stop",
]

BACKENDS = ("hf", "vllm", "scripted")


def make_backend(
    name: str, model: Any, tokenizer: Any, cfg: RolloutConfig | None = None, **kw: Any
) -> Backend:
    """Build a backend by name. Extra keywords go to its constructor (``responder=`` for ``scripted``)."""
    cfg = cfg or RolloutConfig()
    if name == "hf":
        from azr.rollout.hf import HFBackend

        return HFBackend(model, tokenizer, cfg, **kw)
    if name == "vllm":
        from azr.rollout.vllm import VLLMBackend

        return VLLMBackend(model, tokenizer, cfg, **kw)
    if name == "scripted":
        responder = kw.pop("responder", None)
        if responder is None:
            raise AzrError("the scripted backend needs responder= (a function or a list of replies)")
        return ScriptedBackend(responder, tokenizer=kw.pop("tokenizer", tokenizer))
    raise AzrError(f"unknown rollout backend {name!r} (known: {', '.join(BACKENDS)})")
