"""The trainer's input and how it is cut up: :class:`TrainBatch`, PPO mini-batches and padded micro-batches.

Scope: token ids and per-sequence values in, tensors laid out for one decoder pass out. Nothing here runs a model.

- :class:`TrainBatch`: one policy-update batch (ids, advantages, sampling temperatures, optional log-probs).
- :func:`ppo_split`: the deterministic, strided split of a batch into PPO mini-batches.
- :func:`micro_batches`: sequences grouped by shared prompt prefix (:mod:`azr.prefix`), sorted by length within a
  group and cut into right-padded :class:`MicroBatch` es, with the packed coordinates of their reply tokens.
- :func:`pad` / :func:`packed`: move per-token values between the packed (n,) and the padded (b, T) layouts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from azr.prefix import PrefixGroup, prefix_groups

PerToken = list[list[float]]  # one list of per-token values per sequence


@dataclass
class TrainBatch:
    """One policy-update batch; every list has one entry per sequence.

    ``temperatures``: the sampling temperature of each sequence (None: all 1.0); the trainer scores tokens under
    ``softmax(logits / T)`` (see :func:`scoring_temperature`). ``old_logprobs``: log-probs under the policy that
    sampled (None: the trainer records them when it needs them). ``ref_logprobs``: log-probs under the reference
    policy (None: computed by the trainer when ``kl_coef > 0``). Both are per token, at the sequence's temperature.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]
    old_logprobs: PerToken | None = None
    temperatures: list[float] | None = None
    ref_logprobs: PerToken | None = None

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        if len(self.completion_ids) != n or len(self.advantages) != n:
            raise ValueError("prompt_ids, completion_ids and advantages must have one entry per sequence")
        for name in ("old_logprobs", "ref_logprobs"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != n:
                raise ValueError(f"{name} must have one entry per sequence")
            if any(len(lp) != len(c) for lp, c in zip(values, self.completion_ids, strict=True)):
                raise ValueError(f"each {name} entry must have one value per completion token")
        if self.temperatures is not None:
            if len(self.temperatures) != n:
                raise ValueError("temperatures must have one entry per sequence")
            if any(not t >= 0 for t in self.temperatures):
                raise ValueError("temperatures must be >= 0")
        if any(len(p) == 0 for p in self.prompt_ids):
            raise ValueError("every prompt needs at least one token")

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def subset(self, index: Sequence[int]) -> TrainBatch:
        """The sequences ``index``, in that order, with every per-sequence field."""

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in index]

        return TrainBatch(
            prompt_ids=[self.prompt_ids[i] for i in index],
            completion_ids=[self.completion_ids[i] for i in index],
            advantages=[self.advantages[i] for i in index],
            old_logprobs=pick(self.old_logprobs),
            temperatures=pick(self.temperatures),
            ref_logprobs=pick(self.ref_logprobs),
        )


def scoring_temperature(sampled_at: float) -> float:
    """The temperature a sequence's tokens are scored at: the one it was sampled at, or 1.0 for greedy (T == 0).

    Greedy decoding has no sampling distribution to match (its limit, T -> 0, is a one-hot with zero gradient),
    so a greedy sample is scored under the untempered policy, which is also what the ``hf`` sampler reports.
    """
    return sampled_at if sampled_at > 0 else 1.0


def ppo_split(index: Sequence[int], k: int) -> list[list[int]]:
    """``index`` cut into ``min(k, len(index))`` disjoint strided mini-batches: element ``j`` goes to ``j % k``.

    Strided rather than contiguous because the loop orders samples by (task type x role) group: every mini-batch
    then holds a share of every group. The split is a pure function of the order, so nothing needs checkpointing.

    >>> ppo_split([0, 1, 2, 3, 4], 2)
    [[0, 2, 4], [1, 3]]
    """
    k = max(1, min(k, len(index)))
    return [list(index[j::k]) for j in range(k)]


@dataclass
class MicroBatch:
    """A padded micro-batch: decoder inputs plus the packed positions of its reply tokens."""

    index: list[int]  # positions of these sequences in the TrainBatch
    input_ids: torch.Tensor  # (b, L): the tokens after the shared prefix
    attention_mask: torch.Tensor  # (b, L)
    rows: torch.Tensor  # (n,) sequence row of each reply token
    cols: torch.Tensor  # (n,) position in input_ids whose hidden state predicts that token
    targets: torch.Tensor  # (n,) the reply token ids
    lengths: list[int]  # reply length per sequence
    prefix_ids: torch.Tensor | None = None  # (1, P) the prefix every member shares, run once
    temperatures: torch.Tensor | None = None  # (n, 1) scoring temperature per token; None when all 1.0


def plan(batch: TrainBatch, share_prefix: bool) -> list[PrefixGroup]:
    """Groups of sequences sharing a prompt prefix; sequences with none share one group with prefix 0."""
    everyone = PrefixGroup(0, tuple(range(len(batch))))
    if not share_prefix or len(batch) < 2:
        return [everyone]
    groups = prefix_groups(batch.prompt_ids, keep=1)
    alone = tuple(i for g in groups if not g.prefix_len for i in g.members)
    shared = [g for g in groups if g.prefix_len]
    return shared + ([PrefixGroup(0, alone)] if alone else [])


def micro_batches(
    batch: TrainBatch,
    size: int,
    share_prefix: bool,
    pad_id: int,
    device: torch.device,
    tokens: int = 0,
) -> Iterator[MicroBatch]:
    """Length-sorted, right-padded micro-batches of at most ``size`` sequences (per shared-prefix group). With
    ``tokens``, a group with a shared prefix puts more members in one micro-batch while its padded tokens after the
    prefix (rows x its longest member) stay within ``tokens``: one prefix pass instead of several, for no more
    activations than that many tokens."""
    total = [len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids, strict=True)]
    for group in plan(batch, share_prefix):
        order = sorted(group.members, key=lambda i: -total[i])
        start = 0
        while start < len(order):
            n = size
            if tokens and group.prefix_len:  # the longest member left comes first
                n = max(size, tokens // max(total[order[start]] - group.prefix_len, 1))
            index = order[start : start + n]
            yield micro_batch(batch, index, group.prefix_len if len(index) > 1 else 0, pad_id, device)
            start += n


def micro_batch(
    batch: TrainBatch, index: list[int], skip: int, pad_id: int, device: torch.device
) -> MicroBatch:
    """One micro-batch of ``index``; the first ``skip`` tokens (shared by all) become ``prefix_ids``."""
    seqs = [batch.prompt_ids[i] + batch.completion_ids[i] for i in index]
    width = max(len(s) for s in seqs) - skip
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)  # (b, L)
    att = torch.zeros((len(index), width), dtype=torch.long)  # (b, L)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    lengths: list[int] = []
    for row, (i, seq) in enumerate(zip(index, seqs, strict=True)):
        p, c = len(batch.prompt_ids[i]), batch.completion_ids[i]
        ids[row, : len(seq) - skip] = torch.tensor(seq[skip:], dtype=torch.long)
        att[row, : len(seq) - skip] = 1
        rows += [row] * len(c)
        cols += range(p - 1 - skip, p + len(c) - 1 - skip)
        targets += c
        lengths.append(len(c))
    prefix = torch.tensor([seqs[0][:skip]], dtype=torch.long, device=device) if skip else None
    return MicroBatch(
        index=index,
        input_ids=ids.to(device),
        attention_mask=att.to(device),
        rows=torch.tensor(rows, dtype=torch.long, device=device),
        cols=torch.tensor(cols, dtype=torch.long, device=device),
        targets=torch.tensor(targets, dtype=torch.long, device=device),
        lengths=lengths,
        prefix_ids=prefix,
        temperatures=_token_temperatures(batch, index, lengths, device),
    )


def _token_temperatures(
    batch: TrainBatch, index: list[int], lengths: list[int], device: torch.device
) -> torch.Tensor | None:
    """(n, 1) scoring temperature of every reply token of ``index``; None when all are 1.0 (no division)."""
    if batch.temperatures is None:
        return None
    temps = [scoring_temperature(batch.temperatures[i]) for i in index]
    if all(t == 1.0 for t in temps):
        return None
    flat = [t for t, n in zip(temps, lengths, strict=True) for _ in range(n)]
    return torch.tensor(flat, dtype=torch.float32, device=device).unsqueeze(1)


def pad(flat: torch.Tensor, mb: MicroBatch) -> torch.Tensor:
    """Scatter packed per-token values (n,) into a right-padded (b, T) matrix."""
    width = max(mb.lengths) if mb.lengths else 0
    out = flat.new_zeros((len(mb.lengths), width))  # (b, T)
    if flat.numel():
        offsets = torch.cat([torch.arange(n, device=flat.device) for n in mb.lengths])  # (n,)
        out = out.index_put((mb.rows, offsets), flat)
    return out


def packed(values: PerToken, mb: MicroBatch, device: torch.device) -> torch.Tensor:
    """Per-token values of ``mb``'s sequences, packed (n,) in the micro-batch's token order."""
    flat = [x for i in mb.index for x in values[i]]
    return torch.tensor(flat, dtype=torch.float32, device=device)
