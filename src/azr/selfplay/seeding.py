"""The seeding stage: fill the empty buffers before RL starts (paper section 3.3.1).

All buffers start from the identity triplet. The model then proposes deduction-style triplets, with references drawn
from the growing seed set, until it holds ``n_seed`` valid ones; each valid triplet enters both the deduction and the
abduction buffer. For every new seed program the model is also asked for inputs plus a message, which gives the
induction seeds. Nothing here is trained on. A seed file in the reference's JSONL format can replace or extend this.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from azr.selfplay.step import Progress, SelfPlay
from azr.tasks.seeds import identity_seed, import_seeds, resolve_seed_file
from azr.types import TaskType


@dataclass
class SeedReport:
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


def seed_buffers(sp: SelfPlay, progress: Progress | None = None, batch_size: int | None = None) -> SeedReport:
    """Make sure every buffer holds its seeds; returns what was done. Seeds are stored at step 0.

    ``batch_size``: proposals per round (default ``selfplay.batch_size`` of ``sp``'s config). With several
    processes rank 0 seeds alone with a self-play object built for its share of the batch, so the loop passes the
    whole batch size here."""
    cfg, store = sp.cfg.selfplay, sp.store
    report = SeedReport()
    if store.count() == 0:
        store.add_tasks(identity_seed(sp.executor), 0)
        if cfg.seed_file:
            path = resolve_seed_file(cfg.seed_file)
            report.imported = import_seeds(sp.executor, store, path, sp.cfg).accepted
    while store.count(TaskType.DEDUCTION) < cfg.n_seed and report.rounds < cfg.max_seed_rounds:
        report.rounds += 1
        if progress:
            progress("seeding", min(store.count(TaskType.DEDUCTION), cfg.n_seed), cfg.n_seed)
        _seed_round(sp, report, progress, batch_size or sp.cfg.selfplay.batch_size)
    report.counts = {k.value: store.count(k) for k in TaskType}
    return report


def _seed_round(sp: SelfPlay, report: SeedReport, progress: Progress | None, batch_size: int) -> None:
    timings: dict[str, float] = {}
    B = max(batch_size, 4)
    phase_step = -report.rounds  # negative "steps" keep seeding samples distinct from RL steps
    proposals = sp.propose(phase_step, timings, None, counts={TaskType.DEDUCTION: B})
    report.proposed += len(proposals)
    triplets = sp.validate(proposals, 0, timings)
    report.accepted += len(triplets)
    if not triplets:
        return
    seeds = [dataclasses.replace(t, origin="seed") for t in triplets]
    seeds += [dataclasses.replace(t, type=TaskType.ABDUCTION, origin="seed") for t in triplets]
    sp.store.add_tasks(seeds, 0)
    induction = sp.propose(
        phase_step, timings, None, counts={TaskType.INDUCTION: len(triplets)}, induction_refs=triplets
    )
    sp.store.add_tasks([dataclasses.replace(t, origin="seed") for t in sp.validate(induction, 0, timings)], 0)
