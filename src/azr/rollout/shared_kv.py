"""Decoding with one copy of each shared part of the prompts' keys and values, however many rows read it.

Self-play prompts repeat at two levels. The prompts of one task type and role share a long *prefix* (the system
message and the worked demonstrations), and each Monte-Carlo proposal is solved several times from the same
prompt. A plain KV cache holds every row's whole prompt, so at every decode step the shared prefix is read once per
row and each prompt once per sample. Here the keys/values are kept in *levels*: the shared prefixes once per group,
each prompt's rest (what follows its prefix; the whole prompt for one with no shared prefix) once per distinct
prompt, and each row owns only a *tail* buffer for the tokens it generates. Attention of one decode step is computed per part
and the parts are merged exactly through their log-sum-exps:

- a level's part: the queries of all rows that read one of its entries are stacked (N, kv_heads, copies x rep,
  d) and read that entry's keys once (one batched matmul for the level);
- tail part: each row against its own generated tokens (the current one included).

``softmax([a, b]) @ [Va; Vb] = w_a softmax(a) @ Va + w_b softmax(b) @ Vb`` with ``w = exp(lse_part - lse_all)``, so
the result equals attention over the row's whole sequence, up to float rounding. A row with no shared prefix reads
an entry whose positions are all masked: its part's weight is exp(-huge) = 0.

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
from azr.rollout import lean as lean_decoder
from azr.rollout.prompt_store import Level, PromptStore

try:
    from transformers import AttentionInterface
except ImportError:  # pragma: no cover - transformers without pluggable attention
    AttentionInterface = None  # type: ignore[assignment,misc]

__all__ = ["NAME", "available", "decode_steps", "decoding"]

NAME = "azr_prompt_store"
_ACTIVE: contextvars.ContextVar[PromptStore | None] = contextvars.ContextVar("azr_prompt_store", default=None)


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
