"""Token sampling and stop-string detection for the ``hf`` backend (see :mod:`azr.rollout.hf`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``weights`` (A, V); see :func:`_draw_and_total`."""
    return _draw_and_total(weights, generator)[0]


def _draw_and_total(
    weights: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One index per row of ``weights`` (A, V), drawn with probability proportional to the row (inverse CDF).

    Same distribution as ``torch.multinomial(weights, 1)``, about 7x cheaper over a 49k vocabulary (one uniform
    draw per row instead of one exponential per entry: 3 ms instead of 21 ms for 16 rows). The CDF is summed in
    float64 so no tail token is lost to rounding; zero-weight entries are never drawn (``right=True``). It is
    summed in two levels: the sums of blocks of :data:`BLOCK` entries, then the entries of the one block the draw
    lands in, so only (A, V / BLOCK) and (A, BLOCK) float64 prefix sums are formed, not (A, V). Also returns each
    row's total weight (A,), in float64, which the block sums give for free.
    """
    rows, size = weights.shape
    pad = -size % BLOCK
    if pad:
        weights = torch.nn.functional.pad(weights, (0, pad))
    blocks = weights.view(rows, -1, BLOCK)  # (A, nb, BLOCK)
    cdf = blocks.sum(dim=-1, dtype=torch.float64).cumsum(dim=-1)  # (A, nb)
    # drawn on the CPU generator (the same stream for a seed on any device), then moved to the weights' device
    u = torch.rand((rows, 1), generator=generator, dtype=torch.float64).to(cdf.device)  # (A, 1)
    u = u * cdf[:, -1:]
    block = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[1] - 1)  # (A, 1)
    before = torch.where(block > 0, cdf.gather(1, (block - 1).clamp(min=0)), 0.0)  # (A, 1)
    inner = blocks.gather(1, block[:, :, None].expand(-1, -1, BLOCK))[:, 0]  # (A, BLOCK)
    inner = inner.double().cumsum(dim=-1) + before
    index = torch.searchsorted(inner, u, right=True).clamp(max=BLOCK - 1)  # (A, 1)
    return (block * BLOCK + index)[:, 0].clamp(max=size - 1), cdf[:, -1]


BLOCK = 256


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row of ``logits`` (A, V); return ``(tokens (A,), logprobs (A,))``.

    The log-prob is that of the sampled token under the tempered distribution ``softmax(logits / T)`` before top-p
    truncation (what the trainer recomputes at the same temperature); with ``temperature == 0`` (greedy), the
    untempered ``log_softmax(logits)``. Without top-p no (A, V) log-softmax is formed: the draw takes the
    unnormalised ``exp(z - max z)`` and the sampled token's log-prob is ``z - max z - log(sum)``."""
    logits = logits.float()
    if temperature == 0:
        logp = torch.log_softmax(logits, dim=-1)  # (A, V)
        tokens = logp.argmax(dim=-1)
        return tokens, logp.gather(1, tokens[:, None])[:, 0]
    z = logits / temperature
    if top_p >= 1.0:
        z -= z.amax(dim=-1, keepdim=True)
        weights = z.exp()  # (A, V), largest 1
        tokens, total = _draw_and_total(weights, generator)  # (A,), (A,) float64
        logp = z.gather(1, tokens[:, None])[:, 0].double() - total.log()
        return tokens, logp.float()
    logp = torch.log_softmax(z, dim=-1)  # (A, V)
    sorted_logp, order = logp.sort(dim=-1, descending=True)  # (A, V)
    sorted_p = sorted_logp.exp()
    drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p  # mass before this token already reaches top_p
    kept = sorted_p.masked_fill(drop, 0.0)  # the first token is never dropped
    tokens = order.gather(1, _draw(kept, generator)[:, None])[:, 0]
    return tokens, logp.gather(1, tokens[:, None])[:, 0]


class StopDetector:
    """Finds stop strings at the end of growing token sequences without decoding whole sequences each step.

    ``may_end[t]`` says whether token ``t``'s text contains the last character of some stop string; only such a
    token can complete a stop string, so only those rows get a tail decode of ``window`` tokens. It works on token
    ids already on the host (the decode loop copies each step's tokens there once), so it never meets a device
    tensor.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.window = max((len(s) for s in self.stops), default=0) + 1  # every token adds >= 1 char
        self.may_end: list[bool] = self._build_may_end() if self.stops else []  # (V,)

    def _build_may_end(self) -> list[bool]:
        size = len(self.tokenizer)
        last_chars = {s[-1] for s in self.stops}
        if any(not c.isascii() for c in last_chars):  # a byte-split character: check every token
            return [True] * size
        texts = self.tokenizer.batch_decode([[i] for i in range(size)])
        return [any(c in t for c in last_chars) for t in texts]

    def candidates(self, tokens: Sequence[int]) -> list[int]:
        """Positions in ``tokens`` (one new token id per row) whose token could complete a stop string; an id
        beyond the tokenizer's vocabulary (a padded LM head) always could."""
        if not self.stops:
            return []
        size = len(self.may_end)
        return [i for i, t in enumerate(tokens) if t >= size or self.may_end[t]]

    def hit(self, token_ids: Sequence[int]) -> bool:
        """Whether the decoded tail of ``token_ids`` contains a stop string (call after every candidate token)."""
        tail = self.tokenizer.decode(list(token_ids[-self.window :]), skip_special_tokens=False)
        return any(s in tail for s in self.stops)


def to_host(tokens: torch.Tensor, logprobs: torch.Tensor) -> tuple[list[int], list[float]]:
    """``tokens`` (A,) and ``logprobs`` (A,) as Python lists, in one device-to-host copy (one sync per decode
    step on a GPU instead of one per list). Token ids travel as float64, exact below 2**53."""
    both = torch.stack((tokens.double(), logprobs.double())).cpu()  # (2, A)
    return [int(t) for t in both[0].tolist()], both[1].tolist()
