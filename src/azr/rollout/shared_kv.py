"""Decoding with one copy of each prompt's keys and values, however many rows sample from it.

Self-play samples several replies per prompt (the Monte-Carlo solves of every proposal). A plain KV cache holds
each prompt once per row, so four solves of an 800-token prompt store and read its keys and values four times at
every decode step. Here the prompts' keys/values are kept once, in a *prompt store* (U distinct prompts, left-padded),
and each row owns only a *tail* buffer for the tokens it generates. Attention of one decode step is computed in two
parts and merged exactly through their log-sum-exps:

- prompt part: the queries of all rows of a prompt are stacked (U, kv_heads, copies x rep, d) and read that
  prompt's keys once (one batched matmul for all prompts);
- tail part: each row against its own generated tokens (the current one included).

``softmax([a, b]) @ [Va; Vb] = w_a softmax(a) @ Va + w_b softmax(b) @ Vb`` with ``w = exp(lse_part - lse_all)``, so
the result equals attention over the row's whole sequence, up to float rounding.

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

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = ["NAME", "PromptStore", "available", "decode_steps", "decoding"]

NAME = "azr_prompt_store"
_ACTIVE: contextvars.ContextVar[PromptStore | None] = contextvars.ContextVar("azr_prompt_store", default=None)


class PromptStore:
    """Keys/values of ``U`` distinct prompts per layer, the rows decoding from them, and the rows' tails.

    ``keys``/``values``: per layer (U, kv_heads, P, d), prompts left-padded to P; ``keep`` (U, P) marks real
    positions. ``row_prompt`` (B,) gives each row's prompt. Tails have room for ``max_new`` tokens per row.
    """

    def __init__(
        self,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        keep: torch.Tensor,
        row_prompt: list[int],
        max_new: int,
    ) -> None:
        self.keys, self.values, self.keep = keys, values, keep
        _, h, _, d = keys[0].shape
        b = len(row_prompt)
        self.tail_k = [k.new_zeros(b, h, max_new, d) for k in keys]
        self.tail_v = [v.new_zeros(b, v.shape[1], max_new, v.shape[3]) for v in values]
        self.length = 0  # tail positions written by completed steps
        self._set_rows(row_prompt)

    def _set_rows(self, row_prompt: list[int]) -> None:
        """Where each row's queries go in the stacked (U, copies) layout."""
        self.row_prompt = row_prompt
        count: dict[int, int] = {}
        slot = []
        for u in row_prompt:
            slot.append(count.get(u, 0))
            count[u] = slot[-1] + 1
        self.copies = max(count.values())
        device = self.keep.device
        self.rows_u = torch.tensor(row_prompt, device=device)  # (B,)
        self.rows_slot = torch.tensor(slot, device=device)  # (B,)

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the rows at positions ``keep`` (finished rows leave)."""
        self.tail_k = [t[keep] for t in self.tail_k]
        self.tail_v = [t[keep] for t in self.tail_v]
        self._set_rows([self.row_prompt[i] for i in keep.tolist()])

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
        rep = heads // kv_heads
        q = query.reshape(b, kv_heads, rep, d)  # (B, K, R, d)
        # Tail part: each row against its own generated tokens (all real: finished rows leave the batch).
        tk, tv = self.tail_k[layer][:, :, : t + 1], self.tail_v[layer][:, :, : t + 1]  # (B, K, t+1, d)
        s_tail = torch.matmul(q, tk.transpose(-1, -2)) * scale  # (B, K, R, t+1)
        lse_tail = torch.logsumexp(s_tail, dim=-1, keepdim=True)  # (B, K, R, 1)
        out_tail = torch.matmul(torch.exp(s_tail - lse_tail), tv)  # (B, K, R, d)
        # Prompt part: the rows of one prompt stacked, its keys read once.
        u = self.keys[layer].shape[0]
        stacked = q.new_zeros(u, self.copies, kv_heads, rep, d)
        stacked[self.rows_u, self.rows_slot] = q
        stacked = stacked.permute(0, 2, 1, 3, 4).reshape(u, kv_heads, self.copies * rep, d)
        s_prompt = torch.matmul(stacked, self.keys[layer].transpose(-1, -2)) * scale  # (U, K, C*R, P)
        s_prompt = s_prompt.masked_fill(~self.keep[:, None, None, :], torch.finfo(s_prompt.dtype).min)
        lse_prompt = torch.logsumexp(s_prompt, dim=-1, keepdim=True)  # (U, K, C*R, 1)
        out_prompt = torch.matmul(torch.exp(s_prompt - lse_prompt), self.values[layer])  # (U, K, C*R, d)

        def rows(x: torch.Tensor) -> torch.Tensor:  # (U, K, C*R, n) -> (B, K, R, n)
            x = x.reshape(u, kv_heads, self.copies, rep, x.shape[-1]).permute(0, 2, 1, 3, 4)
            return x[self.rows_u, self.rows_slot]

        lse_p = rows(lse_prompt)
        lse = torch.logaddexp(lse_p, lse_tail)
        out = torch.exp(lse_p - lse) * rows(out_prompt) + torch.exp(lse_tail - lse) * out_tail  # (B, K, R, d)
        return out.reshape(b, 1, heads, d)


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
    config = model.config
    before = config._attn_implementation
    token = _ACTIVE.set(store)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
        _ACTIVE.reset(token)


def decode_steps(
    model: Any,
    logits: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    cache: Any,
    row_of: list[int],
    max_new: int,
) -> Generator[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None], None]:
    """Decode rows ``row_of`` (row -> distinct prompt) from the distinct prompts' prefill (logits (U, V), mask
    (U, P), last positions (U,), cache): yields the rows' first logits, then, for every (tokens, rows kept) sent,
    the next logits of the rows kept."""
    store = PromptStore(
        [layer.keys for layer in cache.layers],
        [layer.values for layer in cache.layers],
        mask.bool(),
        row_of,
        max_new,
    )
    del cache
    index = torch.tensor(row_of, device=logits.device)
    logits, pos = logits[index], pos[index]
    while True:
        tokens, keep = yield logits
        if keep is not None:
            store.select(keep)
            pos = pos[keep]
        pos = pos + 1
        with decoding(model, store):
            out = model(input_ids=tokens[:, None], position_ids=pos[:, None], use_cache=False)
        store.advance()
        logits = out.logits[:, -1]  # (A, V)
