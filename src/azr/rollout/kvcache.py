"""A preallocated KV cache for the ``hf`` backend: writes in place instead of a ``torch.cat`` per decode step."""

from __future__ import annotations

from typing import Any

import torch

try:  # transformers >= 4.56 layered caches
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover - older transformers
    DynamicCache = DynamicLayer = None  # type: ignore[assignment,misc]


class PreallocLayer(DynamicLayer if DynamicLayer is not None else object):  # type: ignore[misc]
    """A KV cache layer with room for ``capacity`` positions: writes in place, returns views (no cat per step)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.k_buf = key_states.new_empty(b, h, self.capacity, d)  # (B, H, C, D)
        self.v_buf = value_states.new_empty(b, value_states.shape[1], self.capacity, value_states.shape[3])
        self.keys, self.values = self.k_buf[:, :, :0], self.v_buf[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded")
        self.k_buf[:, :, self.length : end] = key_states
        self.v_buf[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.k_buf[:, :, :end], self.v_buf[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]


def new_cache(model: Any, capacity: int, prealloc: bool) -> Any:
    """A DynamicCache whose plain full-attention layers are swapped for preallocated ones."""
    cache = DynamicCache(config=model.config)
    if prealloc:
        for i, layer in enumerate(cache.layers):
            if type(layer) is DynamicLayer:
                cache.layers[i] = PreallocLayer(capacity)
    return cache
