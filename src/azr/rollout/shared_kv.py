"""Decoding with one copy of each shared part of the prompts' keys and values, however many rows read it.

Self-play prompts repeat at two levels. The prompts of one task type and role share a long *head* (the system
message and the worked demonstrations), and each Monte-Carlo proposal is solved several times from the same
prompt. A plain KV cache holds every row's whole prompt, so at every decode step the head is read once per row
and each prompt once per sample. Here the keys/values are kept in *levels*: the heads once per group, each
prompt's rest (what follows its head; the whole prompt for one with no head) once per distinct prompt, and each
row owns only a *tail* buffer for the tokens it generates. Attention of one decode step is computed per part
and the parts are merged exactly through their log-sum-exps:

- a level's part: the queries of all rows that read one of its entries are stacked (N, kv_heads, copies x rep,
  d) and read that entry's keys once (one batched matmul for the level);
- tail part: each row against its own generated tokens (the current one included).

``softmax([a, b]) @ [Va; Vb] = w_a softmax(a) @ Va + w_b softmax(b) @ Vb`` with ``w = exp(lse_part - lse_all)``, so
the result equals attention over the row's whole sequence, up to float rounding. A row with no head reads an
entry whose positions are all masked: its part's weight is exp(-huge) = 0.

On a CPU with a C++ compiler the whole step (every level, the tail and the merge) runs in one compiled call
(:mod:`azr.kernels`), about 2-3x faster per layer than the fused-attention calls below; the PyTorch path
is the fallback and the reference the tests hold the kernel to.

It plugs into transformers as an attention implementation (:data:`NAME`, registered on import) that the ``hf``
backend switches on for the decode steps only, with the decoding state in a context variable. The model runs with
no cache and no mask; the attention function writes the step's keys/values into the tails itself.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Generator, Iterator
from typing import Any

import torch

from azr.hfcompat import attention_implementation
from azr.kernels import native_kernels
from azr.rollout import lean as lean_decoder

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = ["NAME", "Level", "PromptStore", "available", "decode_steps", "decoding", "stacked_level"]

NAME = "azr_prompt_store"
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_ACTIVE: contextvars.ContextVar[PromptStore | None] = contextvars.ContextVar("azr_prompt_store", default=None)


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
        self.empty = ~keep.any(dim=-1)  # (N,) entries with no position at all (a prompt with no head)
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
        for level, layout in zip(self.levels, self.layouts):
            out, lse = _stacked(q, level, layout, layer, scale)
            lses.append(lse)
            outs.append(out)
        lse_all = torch.logsumexp(torch.stack(lses), dim=0)
        out = sum(torch.exp(lse - lse_all) * part for lse, part in zip(lses, outs))
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


def _attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    store = _ACTIVE.get()
    if store is None or query.shape[2] != 1:
        raise RuntimeError(f"the {NAME} attention runs only inside azr's decode steps")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return store.attend(module.layer_idx, query, key, value, scale), None


def available() -> bool:
    """Whether this transformers version takes pluggable attention functions."""
    return AttentionInterface is not None


if AttentionInterface is not None:
    AttentionInterface.register(NAME, _attention)


@contextlib.contextmanager
def decoding(model: Any, store: PromptStore) -> Iterator[None]:
    """Run ``model``'s attention through ``store`` inside the block (its config is restored afterwards)."""
    token = _ACTIVE.set(store)
    try:
        with attention_implementation(model.config, NAME):
            yield
    finally:
        _ACTIVE.reset(token)


def decode_steps(
    model: Any,
    logits: torch.Tensor,
    pos: torch.Tensor,
    levels: list[Level],
    row_of: list[int],
    max_new: int,
    native: bool = True,
    lean: bool = True,
) -> Generator[torch.Tensor, tuple[torch.Tensor, list[int] | None], None]:
    """Decode rows ``row_of`` (row -> distinct prompt) from the distinct prompts' prefill (last logits (U, V),
    last positions (U,), shared ``levels``): yields the rows' first logits, then, for every (tokens, rows kept)
    sent, the next logits of the rows kept. ``native``: use the compiled attention kernel where it builds; ``lean``:
    run the step through :mod:`azr.rollout.lean` where it supports the model, not transformers' forward."""
    store = PromptStore(levels, row_of, max_new, native)
    lean = lean and lean_decoder.supports(model)
    index = torch.tensor(row_of, device=logits.device)
    logits, pos = logits[index], pos[index]
    while True:
        tokens, keep = yield logits
        if keep is not None:
            store.select(keep)
            pos = pos[torch.tensor(keep, device=pos.device)]
        pos = pos + 1
        if lean:
            logits = lean_decoder.decode_logits(model, tokens, pos, store)  # (A, V)
        else:
            with decoding(model, store):
                out = model(input_ids=tokens[:, None], position_ids=pos[:, None], use_cache=False)
            logits = out.logits[:, -1]  # (A, V)
        store.advance()
