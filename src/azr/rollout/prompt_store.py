"""The prompt store: one copy of each shared part of the prompts' keys/values, and one decode step's attention.

The keys/values are kept in *levels* (:class:`Level`): the shared prefixes once per group, each prompt's rest once
per distinct prompt, and each row owns only a *tail* for the tokens it generates (:class:`PromptStore`). One decode
step's attention is computed per part, the parts merged exactly through their log-sum-exps (the derivation is in
:mod:`azr.rollout.shared_kv`, which drives decoding with it). On a CPU with a C++ compiler the whole step runs in
one compiled call (:mod:`azr.kernels`, ``prompt_store.cpp``); the PyTorch path below is the fallback and the
reference.

Both decoders read it: transformers' forward through :mod:`azr.rollout.shared_kv`'s attention plug-in, and the
lean Llama step (:mod:`azr.rollout.lean`). It imports neither.
"""

from __future__ import annotations

from typing import Any

import torch

from azr.kernels import native_kernels

__all__ = ["Level", "PromptStore", "stacked_level"]

_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


class Level:
    """Shared keys/values of one level: per layer (N, kv_heads, L, d); ``keep`` (N, L) marks real positions and
    ``owner`` gives the entry each distinct prompt reads (prompt -> 0..N-1)."""

    def __init__(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], keep: torch.Tensor, owner: list[int]
    ) -> None:
        self.keys, self.values, self.keep, self.owner = keys, values, keep, owner
        bias = torch.zeros(keep.shape, dtype=keys[0].dtype, device=keep.device)
        self.bias = bias.masked_fill(~keep, float("-inf"))[:, None, None, :]  # (N, 1, 1, L), added to scores
        self.keep = keep.contiguous()  # as the compiled kernel reads it
        self.empty = ~keep.any(
            dim=-1
        )  # (N,) entries with no position at all (a prompt with no shared prefix)
        self.any_empty = bool(self.empty.any())  # read once here, not at every layer of every decode step


def stacked_level(parts: list[list[tuple[torch.Tensor, torch.Tensor]]], owner: list[int]) -> Level:
    """A :class:`Level` from per-layer lists of (keys, values) of shape (kv_heads, L_i, d), padded to
    the longest entry; ``owner``: distinct prompt -> entry."""
    lengths = [k.shape[1] for k, _ in parts[0]]
    width = max(max(lengths), 1)
    keep = torch.zeros(len(lengths), width, dtype=torch.bool)
    for i, n in enumerate(lengths):
        keep[i, :n] = True
    keys, values = [], []
    for entries in parts:
        k0, v0 = entries[0]
        k = k0.new_zeros(len(entries), k0.shape[0], width, k0.shape[2])
        v = v0.new_zeros(len(entries), v0.shape[0], width, v0.shape[2])
        for i, (ki, vi) in enumerate(entries):
            k[i, :, : ki.shape[1]] = ki
            v[i, :, : vi.shape[1]] = vi
        keys.append(k)
        values.append(v)
    return Level(keys, values, keep.to(keys[0].device), owner)


class _Layout:
    """Where each row's queries go in a level's stacked (N, copies) layout: ``entry`` and ``slot`` per row."""

    def __init__(self, entries: list[int], device: torch.device) -> None:
        count: dict[int, int] = {}
        slot = []
        for e in entries:
            slot.append(count.get(e, 0))
            count[e] = slot[-1] + 1
        self.copies = max(count.values())
        self.entry = torch.tensor(entries, device=device)  # (B,)
        self.slot = torch.tensor(slot, device=device)  # (B,)


class PromptStore:
    """The shared levels, the rows decoding from them (``row_prompt``: row -> distinct prompt) and the rows'
    tails, which have room for ``max_new`` tokens per row."""

    def __init__(self, levels: list[Level], row_prompt: list[int], max_new: int, native: bool = True) -> None:
        self.levels = levels
        self.native = _native_kernel(levels[-1].keys[0]) if native else None
        like_k, like_v = levels[-1].keys, levels[-1].values
        b = len(row_prompt)
        self.tail_k = [k.new_zeros(b, k.shape[1], max_new, k.shape[3]) for k in like_k]
        self.tail_v = [v.new_zeros(b, v.shape[1], max_new, v.shape[3]) for v in like_v]
        self.length = 0  # tail positions written by completed steps
        self._set_rows(row_prompt)

    def _set_rows(self, row_prompt: list[int]) -> None:
        self.row_prompt = row_prompt
        device = self.levels[-1].keep.device
        self.layouts = [_Layout([level.owner[u] for u in row_prompt], device) for level in self.levels]

    def select(self, keep: list[int]) -> None:
        """Keep only the rows at positions ``keep`` (finished rows leave)."""
        index = torch.tensor(keep, device=self.tail_k[0].device)
        self.tail_k = [t[index] for t in self.tail_k]
        self.tail_v = [t[index] for t in self.tail_v]
        self._set_rows([self.row_prompt[i] for i in keep])

    def advance(self) -> None:
        self.length += 1

    def attend(
        self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
    ) -> Any:
        """Attention output (B, 1, heads, d) of one decode step; writes ``key``/``value`` (B, kv_heads, 1, d)."""
        t = self.length
        self.tail_k[layer][:, :, t] = key[:, :, 0]
        self.tail_v[layer][:, :, t] = value[:, :, 0]
        b, heads, _, d = query.shape
        kv_heads = key.shape[1]
        q = query.reshape(b, kv_heads, heads // kv_heads, d)  # (B, K, R, d)
        if self.native is not None:
            out = self.native(
                q.contiguous(),
                [level.keys[layer] for level in self.levels],
                [level.values[layer] for level in self.levels],
                [level.keep for level in self.levels],
                [layout.entry for layout in self.layouts],
                self.tail_k[layer],
                self.tail_v[layer],
                t + 1,
                scale,
            )
            return out.reshape(b, 1, heads, d)
        # Tail part: each row against its own generated tokens (all real: finished rows leave the batch).
        tk, tv = self.tail_k[layer][:, :, : t + 1], self.tail_v[layer][:, :, : t + 1]  # (B, K, t+1, d)
        out, lse = _part(q, tk, tv, None, scale)
        lses, outs = [lse], [out]
        for level, layout in zip(self.levels, self.layouts, strict=True):
            out, lse = _stacked(q, level, layout, layer, scale)
            lses.append(lse)
            outs.append(out)
        lse_all = torch.logsumexp(torch.stack(lses), dim=0)
        out = sum(torch.exp(lse - lse_all) * part for lse, part in zip(lses, outs, strict=True))
        return out.to(query.dtype).reshape(b, 1, heads, d)


def _native_kernel(like: torch.Tensor) -> Any | None:
    """The compiled :func:`azr.kernels` attention for keys like ``like``, or None where it does not apply."""
    if like.device.type != "cpu" or like.shape[-1] not in (64, 128):
        return None
    if like.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    module = native_kernels()
    return None if module is None else module.prompt_store_attention


def _part(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``q`` (N, K, Q, d) over ``keys``/``values`` (N, K, L, d) with an additive ``bias``: outputs
    (N, K, Q, d) and log-sum-exps (N, K, Q, 1) of the scaled scores, both in fp32. On a CPU one fused kernel
    (PyTorch's flash attention, which returns the log-sum-exp too): about 10x faster than the three steps below
    for the shapes of a decode step."""
    if q.device.type == "cpu" and _FLASH_CPU is not None:
        out, lse = _FLASH_CPU(q, keys, values, 0.0, False, attn_mask=bias, scale=scale)[:2]
        return out.float(), lse.float().unsqueeze(-1)
    scores = torch.matmul(q, keys.transpose(-1, -2)).float() * scale  # (N, K, Q, L)
    if bias is not None:
        scores = scores + bias.float()
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return torch.matmul(torch.exp(scores - lse).to(values.dtype), values).float(), lse


def _stacked(
    q: torch.Tensor, level: Level, layout: _Layout, layer: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level's part for queries ``q`` (B, K, R, d): outputs (B, K, R, d) and log-sum-exps (B, K, R, 1), the
    rows of one entry stacked so that the entry's keys are read once. An entry with no position weighs nothing
    (log-sum-exp -inf, output 0)."""
    keys, values = level.keys[layer], level.values[layer]
    n = keys.shape[0]
    _, kv_heads, rep, d = q.shape
    stacked = q.new_zeros(n, layout.copies, kv_heads, rep, d)
    stacked[layout.entry, layout.slot] = q
    stacked = stacked.permute(0, 2, 1, 3, 4).reshape(n, kv_heads, layout.copies * rep, d)
    out, lse = _part(stacked, keys, values, level.bias, scale)  # (N, K, C*R, d), (N, K, C*R, 1)
    if level.any_empty:
        empty = level.empty[:, None, None, None]
        out, lse = out.masked_fill(empty, 0.0), lse.masked_fill(empty, float("-inf"))

    def rows(x: torch.Tensor) -> torch.Tensor:  # (N, K, C*R, m) -> (B, K, R, m)
        x = x.reshape(n, kv_heads, layout.copies, rep, x.shape[-1]).permute(0, 2, 1, 3, 4)
        return x[layout.entry, layout.slot]

    return rows(out), rows(lse)
