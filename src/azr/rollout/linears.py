"""Faster linear layers for the ``hf`` backend's decoding, switched on around a ``generate`` call and removed after.

A decode step multiplies a few rows (one token per live row) by every weight of the model, so its linear layers are
bound by how fast the weights stream from memory, and library kernels tuned for big products leave a lot on the
table there:

- :func:`packed_linears` (bf16, or any dtype oneDNN packs): each weight is reordered once per ``generate`` into
  oneDNN's blocked layout (``torch.ops.mkldnn._reorder_linear_weight``, what PyTorch's own compiler uses on CPUs) and
  every call runs the packed kernel. Measured on the 2-core AVX512-BF16 box (2026-12-06), a (1536, 576) bf16 weight
  among 60 (out of cache): 97 against 215 us for 12 rows; the LM head (49152, 576): 2.2 against 5.5 ms. The results
  are bit-identical to ``F.linear``. The plain weight is freed while its packed copy exists (unless another module,
  such as a tied embedding, still reads it), so packing costs no memory beyond one weight at a time.
  In bf16 on a CPU with AVX512-BF16 the weights are packed for azr's own product instead
  (:mod:`azr.kernels`, ``bf16_linear``: 32-column tiles paired along the input, the register-blocked ``vdpbf16ps``
  micro-kernel of the attention kernels), which streams a (1536, 576) weight at ~31 GB/s for 12 rows against
  oneDNN's ~18 (56 against 100 us), 120 against 174 us for 28 rows, and is no slower for prefill's hundreds of rows
  (~425 GFLOP/s) or the LM head. Its sums are in fp32 like oneDNN's, in another order (not bit-identical).
- :func:`small_batch_linears` (fp32): ``(W @ x^T)^T`` for few rows, where MKL's GEMM is faster in that orientation.
"""

from __future__ import annotations

import functools
import types
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "SMALL_BATCH_ROWS",
    "USE_AZR_KERNELS",
    "packed_linears",
    "packing_works",
    "small_batch_linears",
]

SMALL_BATCH_ROWS = 64
_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if hasattr(torch.ops, "mkldnn") else None
_PACKED_LINEAR = (
    getattr(torch.ops.mkldnn, "_linear_pointwise", None) if hasattr(torch.ops, "mkldnn") else None
)


def _linear_small_batch(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``nn.Linear.forward`` computing ``(W @ x^T)^T`` when ``x`` holds few rows (a decode step). MKL's fp32 GEMM is
    25-40% faster in that orientation for 16-48 rows on the 2-core AVX2 box (the LM head: 15.9 ms against 22.8 ms
    for 16 rows); for many rows (prefill) the usual orientation is faster and is kept."""
    rows = x.numel() // x.shape[-1]
    if rows > SMALL_BATCH_ROWS:
        return F.linear(x, self.weight, self.bias)
    out = torch.mm(self.weight, x.reshape(rows, x.shape[-1]).t()).t().contiguous()  # (rows, out)
    if self.bias is not None:
        out += self.bias
    return out.view(*x.shape[:-1], out.shape[-1])


def _plain_linears(model: Any, dtype: torch.dtype) -> list[torch.nn.Linear]:
    return [
        m
        for m in model.modules()
        if type(m) is torch.nn.Linear and m.weight.device.type == "cpu" and m.weight.dtype == dtype
    ]


@contextmanager
def small_batch_linears(model: Any, enabled: bool = True) -> Iterator[None]:
    """While active, the plain fp32 CPU ``nn.Linear`` layers of ``model`` use :func:`_linear_small_batch`."""
    patched = _plain_linears(model, torch.float32) if enabled else []
    for module in patched:
        module.forward = types.MethodType(_linear_small_batch, module)
    try:
        yield
    finally:
        for module in patched:
            del module.forward


@functools.cache
def packing_works(dtype: torch.dtype) -> bool:
    """Whether this build packs ``dtype`` linear weights for the CPU and the packed product matches ``F.linear``."""
    if _PACK is None or _PACKED_LINEAR is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w, x = torch.randn(24, 16, generator=g).to(dtype), torch.randn(3, 16, generator=g).to(dtype)
        got = _PACKED_LINEAR(x, _PACK(w, 3), None, "none", [], "")
        return bool(torch.allclose(got.float(), F.linear(x, w).float(), atol=1e-2, rtol=1e-2))
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _linear_packed(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return _PACKED_LINEAR(x, self._azr_packed, self.bias, "none", [], "")


def _linear_azr(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    out = self._azr_kernels.bf16_linear(
        x.reshape(-1, x.shape[-1]).contiguous(), self._azr_packed, self.out_features
    )
    if self.bias is not None:
        out += self.bias
    return out.view(*x.shape[:-1], self.out_features)


def _azr_kernels(dtype: torch.dtype) -> Any | None:
    """azr's compiled kernels where they pack ``dtype`` weights (bf16 with AVX512-BF16), else None."""
    if dtype != torch.bfloat16 or not USE_AZR_KERNELS:
        return None
    from azr.kernels import native_kernels

    module = native_kernels()
    return module if module is not None and module.bf16_attention_available() else None


USE_AZR_KERNELS = True  # False: oneDNN's packing even where azr's kernels apply


@contextmanager
def packed_linears(model: Any, dtype: torch.dtype, rows: int, enabled: bool = True) -> Iterator[None]:
    """While active, the plain CPU ``nn.Linear`` layers of ``model`` whose weights are ``dtype`` run on packed
    copies of their weights (layout tuned for products of ``rows`` rows; any count works). The plain weights that
    nothing else reads are emptied meanwhile: the caller refills them (the ``hf`` backend casts its decoding copy's
    weights afresh at every ``generate``). A no-op where :func:`packing_works` says no."""
    candidates = _plain_linears(model, dtype) if enabled else []
    # No CPU layers (a model on a GPU): nothing to pack, and azr's CPU kernels are never compiled (about 40 s).
    kernels = _azr_kernels(dtype) if candidates else None
    patched = candidates if candidates and (kernels or packing_works(dtype)) else []
    ids = {id(m) for m in patched}
    shared = {id(p) for m in model.modules() if id(m) not in ids for p in m.parameters(recurse=False)}
    uses = Counter(id(m.weight) for m in patched)
    shared |= {w for w, n in uses.items() if n > 1}  # one weight in two layers: kept too
    try:
        with torch.no_grad():
            for module in patched:
                if kernels is not None and module.in_features % 2 == 0:
                    module._azr_kernels = kernels
                    module._azr_packed = kernels.bf16_pack_linear(module.weight.detach().contiguous())
                    module.forward = types.MethodType(_linear_azr, module)
                else:
                    module._azr_packed = _PACK(module.weight.detach(), rows)
                    module.forward = types.MethodType(_linear_packed, module)
                if id(module.weight) not in shared:
                    module.weight.data = module.weight.data.new_empty(0)
        yield
    finally:
        for module in patched:
            for name in ("forward", "_azr_packed", "_azr_kernels"):
                vars(module).pop(name, None)
