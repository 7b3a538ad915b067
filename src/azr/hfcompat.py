"""Small shims over transformers API renames, so azr runs on every transformers version it allows (>= 4.56).

transformers 5.x renamed the KV-cache argument of ``forward`` from ``past_key_values`` to ``cache`` and warns on the
old name; older versions only know the old one.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.cache
def _cache_param(cls: type) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(module: Any, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand ``cache`` to ``module.forward`` (filled in place) under its version's name."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module  # a peft wrapper
    return {_cache_param(type(base)): cache, "use_cache": True}
