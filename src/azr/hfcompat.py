"""Small shims over transformers API renames, so azr runs on every transformers version it allows (>= 4.56).

transformers 5.x renamed the KV-cache argument of ``forward`` from ``past_key_values`` to ``cache`` and warns on the
old name; older versions only know the old one. :func:`attention_implementation` switches a model's attention
function for a block (azr's own implementations are registered with transformers' ``AttentionInterface``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any


@functools.cache
def _cache_param(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(module: Any, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to ``module.forward`` (filled in place) under its version's name."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module  # a peft wrapper
    return {_cache_param(type(base)): cache, "use_cache": True}


@contextlib.contextmanager
def attention_implementation(config: Any, name: str) -> Iterator[None]:
    """Inside the block the modules reading ``config`` call the attention function registered as ``name``; the
    previous one is restored afterwards, also on an error."""
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before
