"""Grouping token sequences by a shared prefix (azr.prefix): a partition, the prefixes really are shared, and the
saving is the best a brute force finds on small inputs."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from azr.prefix import common_prefix_len, prefix_groups

SEQS = st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=8), min_size=0, max_size=7)


def saving(seqs, groups) -> int:
    return sum((len(g.members) - 1) * g.prefix_len for g in groups)


@given(SEQS, st.integers(0, 2))
@settings(max_examples=200, deadline=None)
def test_groups_partition_and_share_their_prefix(seqs, keep):
    groups = prefix_groups(seqs, keep=keep, min_prefix=1)
    members = sorted(i for g in groups for i in g.members)
    assert members == list(range(len(seqs)))
    for g in groups:
        first = seqs[g.members[0]]
        for i in g.members:
            assert g.prefix_len == 0 or len(seqs[i]) - g.prefix_len >= keep
            assert seqs[i][: g.prefix_len] == first[: g.prefix_len]
        if len(g.members) == 1:
            assert g.prefix_len == 0


def best_runs_by_brute_force(seqs, keep: int) -> int:
    """Every way to cut the sorted sequences into consecutive runs: the most tokens a shared prefix saves."""
    ordered = sorted(seqs)
    n, best = len(ordered), 0
    for cuts in itertools.product((False, True), repeat=n - 1):
        total, run = 0, [ordered[0]]
        for seq, cut in zip(ordered[1:], cuts, strict=True):
            if cut:
                total, run = total + run_saving(run, keep), [seq]
            else:
                run.append(seq)
        best = max(best, total + run_saving(run, keep))
    return best


def run_saving(run, keep: int) -> int:
    shared = min(len(s) - keep for s in run)
    for a, b in itertools.combinations(run, 2):
        shared = min(shared, common_prefix_len(a, b))
    return (len(run) - 1) * max(shared, 0)


@given(st.lists(st.lists(st.integers(0, 1), min_size=1, max_size=5), min_size=1, max_size=6))
@settings(max_examples=100, deadline=None)
def test_saving_is_the_best_cut_of_the_sorted_order(seqs):
    assert saving(seqs, prefix_groups(seqs, keep=1, min_prefix=1)) == best_runs_by_brute_force(seqs, keep=1)


def test_prompts_of_two_kinds_form_two_groups():
    prefix_a, prefix_b = [1] * 30, [2] * 30
    seqs = [[*prefix_a, 5, 6], [*prefix_b, 7], [*prefix_a, 8], [*prefix_b, 9, 9], [3, 3]]
    groups = {frozenset(g.members): g.prefix_len for g in prefix_groups(seqs)}
    assert groups == {frozenset({0, 2}): 30, frozenset({1, 3}): 30, frozenset({4}): 0}


def test_short_shared_prefixes_are_not_worth_a_group():
    seqs = [[1, 2, 3, 4], [1, 2, 3, 5]]
    assert {g.prefix_len for g in prefix_groups(seqs, min_prefix=16)} == {0}
