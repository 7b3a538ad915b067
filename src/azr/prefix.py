"""Group token sequences by a shared leading prefix, so the prefix can be computed once per group.

AZR prompts of one (task type x role) share a long prefix: the system message, the worked demonstrations and the
start of the instructions. Both the sampler's prefill and the trainer's forward pass run that prefix once per group
and attend every member to it (exact, not an approximation: the prefix's keys and values do not depend on what
follows). This module only decides the groups; it is pure (token lists in, index lists out).

How groups are chosen: sort the sequences, take the longest common prefix (LCP) of neighbours, and cut the sorted
list into consecutive runs so that the total number of tokens *not* recomputed, ``sum((size - 1) * prefix_len)``,
is as large as possible (an O(n^2) dynamic programme; n is a few dozen). A run's prefix is the smallest LCP inside
it, capped per member by ``keep`` tokens that must stay outside the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = ["PrefixGroup", "common_prefix_len", "prefix_groups"]


@dataclass(frozen=True)
class PrefixGroup:
    """``members`` (indices into the input list) share their first ``prefix_len`` tokens."""

    prefix_len: int
    members: tuple[int, ...]


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(seqs: Sequence[Sequence[int]], *, keep: int = 1, min_prefix: int = 16) -> list[PrefixGroup]:
    """Partition ``seqs`` into groups with a shared prefix; every index appears in exactly one group.

    ``keep``: tokens of every sequence that must stay after the prefix (1 means at least the last token is
    recomputed, so its hidden state exists). Groups whose prefix is shorter than ``min_prefix`` get
    ``prefix_len = 0`` (sharing a handful of tokens is not worth a separate forward pass). Deterministic: the
    same input always gives the same groups, in order of their first sorted member.
    """
    if not seqs:
        return []
    order = sorted(range(len(seqs)), key=lambda i: (tuple(seqs[i]), i))
    cap = [max(0, len(seqs[i]) - keep) for i in order]  # longest prefix each sorted member allows
    lcp = [
        min(common_prefix_len(seqs[a], seqs[b]), cap[k], cap[k + 1])
        for k, (a, b) in enumerate(pairwise(order))
    ]
    n = len(order)
    best = [0] * (n + 1)  # best[j]: most tokens saved by grouping the first j sorted members
    cut = [0] * (n + 1)  # start of the last run in that best grouping
    for j in range(1, n + 1):
        best[j], cut[j], low = best[j - 1], j - 1, None
        for i in range(j - 2, -1, -1):  # run = sorted members i .. j-1
            low = lcp[i] if low is None else min(low, lcp[i])
            if low < min_prefix:
                break
            saved = best[i] + (j - 1 - i) * low
            if saved > best[j]:
                best[j], cut[j] = saved, i
    runs: list[tuple[int, int]] = []
    j = n
    while j > 0:
        runs.append((cut[j], j))
        j = cut[j]
    groups = []
    for i, j in reversed(runs):
        shared = min(lcp[i : j - 1], default=0)
        prefix_len = shared if j - i > 1 and shared >= min_prefix else 0
        groups.append(PrefixGroup(prefix_len, tuple(order[i:j])))
    return groups
