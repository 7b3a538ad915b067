"""The seeding stage: fill the empty buffers before RL starts (paper section 3.3.1).

All buffers start from the identity triplet. The model then proposes deduction-style triplets, with references drawn
from the growing set of seed tasks, until it holds ``n_seed_tasks`` valid ones; each valid triplet enters both the
deduction and the abduction buffer. For every new seed program the model is also asked for inputs plus a message,
which gives the induction seed tasks. Nothing here is trained on. A seed tasks file in the reference's JSONL format
(``selfplay.seed_tasks_file``) can replace or extend this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from azr.selfplay.step import Progress, SelfPlay
from azr.tasks.seed_tasks import identity_seed_tasks, import_seed_tasks, resolve_seed_tasks_file
from azr.types import TaskType


@dataclass
class SeedingStats:
    """What :func:`seed_buffers` did: proposal rounds, proposals made and valid, rows imported, buffer sizes."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    imported: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def summary(self) -> str:
        sizes = ", ".join(f"{k} {v}" for k, v in self.counts.items())
        imported = f"{self.imported} imported, " if self.imported else ""
        rounds = f"{self.rounds} rounds, {self.accepted}/{self.proposed} proposals valid"
        return f"seeding: {imported}{rounds}; buffers: {sizes}"


def seed_buffers(
    sp: SelfPlay, progress: Progress | None = None, batch_size: int | None = None
) -> SeedingStats:
    """Make sure every buffer holds its seed tasks; returns what was done. Seed tasks are stored at step 0.

    ``batch_size``: proposals per round (default ``selfplay.batch_size`` of ``sp``'s config). With several
    processes rank 0 seeds alone with a self-play object built for its share of the batch, so the loop passes
    the whole batch size here."""
    cfg, store = sp.cfg.selfplay, sp.store
    stats = SeedingStats()
    if store.count() == 0:
        store.add_tasks(identity_seed_tasks(sp.executor), 0)
        if cfg.seed_tasks_file:
            path = resolve_seed_tasks_file(cfg.seed_tasks_file)
            stats.imported = import_seed_tasks(sp.executor, store, path, sp.cfg).accepted
    while store.count(TaskType.DEDUCTION) < cfg.n_seed_tasks and stats.rounds < cfg.max_seeding_rounds:
        stats.rounds += 1
        if progress:
            progress("seeding", min(store.count(TaskType.DEDUCTION), cfg.n_seed_tasks), cfg.n_seed_tasks)
        _seeding_round(sp, stats, progress, batch_size or sp.cfg.selfplay.batch_size)
    stats.counts = {k.value: store.count(k) for k in TaskType}
    return stats


def _seeding_round(sp: SelfPlay, stats: SeedingStats, progress: Progress | None, batch_size: int) -> None:
    timings: dict[str, float] = {}
    B = max(batch_size, 4)
    phase_step = -stats.rounds  # negative "steps" keep seeding samples distinct from RL steps
    proposals = sp.propose(phase_step, timings, None, counts={TaskType.DEDUCTION: B})
    stats.proposed += len(proposals)
    triplets = sp.validate(proposals, 0, timings)
    stats.accepted += len(triplets)
    if not triplets:
        return
    seed_tasks = [dataclasses.replace(t, origin="seed") for t in triplets]
    seed_tasks += [dataclasses.replace(t, type=TaskType.ABDUCTION, origin="seed") for t in triplets]
    sp.store.add_tasks(seed_tasks, 0)
    induction = sp.propose(
        phase_step, timings, None, counts={TaskType.INDUCTION: len(triplets)}, induction_refs=triplets
    )
    sp.store.add_tasks([dataclasses.replace(t, origin="seed") for t in sp.validate(induction, 0, timings)], 0)
