"""The gain of a recipe over several training seeds, with a 95% interval that counts both sources of chance.

Each seed is one training run: the base model's and the trained model's eval results on the same items (paired
verdicts). The seeds' gains (points of pass@1, after minus before) are averaged. The interval is a two-level
bootstrap: draw the seeds with replacement, then within each drawn seed draw its items with replacement (keeping
each item's pair of verdicts), and take the mean gain; the 2.5th and 97.5th percentiles of ``n_boot`` such means
are the interval. With one seed it is the item bootstrap of that seed alone (no seed-to-seed variation is counted:
say so when you report it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

Pairs = Sequence[tuple[bool, bool]]
"""One seed's paired verdicts: (right before, right after) per item."""


@dataclass(frozen=True)
class SeedGain:
    """Mean gain over the seeds in points of pass@1, its bootstrap 95% interval, and each seed's gain."""

    n_seeds: int
    mean: float
    low: float
    high: float
    per_seed: tuple[float, ...]


def gain_points(pairs: Pairs) -> float:
    """After minus before, in points of pass@1 (100 * items gained net / items)."""
    if not pairs:
        raise ValueError("a seed with no items")
    return 100.0 * sum(int(a) - int(b) for b, a in pairs) / len(pairs)


def seed_gain(seeds: Sequence[Pairs], n_boot: int = 10_000, rng_seed: int = 0) -> SeedGain:
    """Mean gain over ``seeds`` and its two-level bootstrap 95% interval (seeds, then items within seeds)."""
    if not seeds:
        raise ValueError("no seeds")
    rng = random.Random(rng_seed)
    diffs = [[int(a) - int(b) for b, a in pairs] for pairs in seeds]
    means = []
    for _ in range(n_boot):
        total = 0.0
        for _ in diffs:
            d = diffs[rng.randrange(len(diffs))]
            total += sum(d[rng.randrange(len(d))] for _ in d) / len(d)
        means.append(100.0 * total / len(diffs))
    means.sort()
    per_seed = tuple(gain_points(p) for p in seeds)
    lo, hi = means[int(0.025 * (n_boot - 1))], means[int(0.975 * (n_boot - 1))]
    return SeedGain(len(seeds), sum(per_seed) / len(per_seed), lo, hi, per_seed)
