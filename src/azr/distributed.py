"""Several training processes (``torchrun`` or ``accelerate launch --multi_gpu``): who does what, and the collectives.

Scope: reading the launcher's environment, starting ``torch.distributed`` (NCCL on CUDA, gloo on CPU), the few
collectives the loop needs, and :class:`SharedStore`, the task store as every rank sees it. Not in scope: sharding
the model (``training.fsdp``, :mod:`azr.training.sharding`); by default every rank holds the whole model, optimizer and
gradients (data parallelism, as DDP). DeepSpeed is not supported.

How a step runs on W processes (ranks):

1. Each rank runs the self-play step on its share of the B prompts per group (``selfplay.batch_size`` split as
   evenly as possible, rank r gets ``B // W`` plus one if ``r < B % W``), with its own sampling seed.
2. :meth:`azr.selfplay.step.SelfPlay.assign_advantages` gathers every rank's rewards, groups and lengths, computes the
   six TRR++ baselines over the global batch and keeps this rank's slice: the same advantages as one process
   scoring the union.
3. The update: each rank's token-mean loss is divided by the *global* reply-token count, the gradients are summed
   over ranks (an all-reduce, what DDP does) before clipping, so every rank applies the same AdamW step, equal to
   the single-process step on the union batch.
4. Rank 0 alone writes ``tasks.sqlite``, ``metrics.jsonl`` and the checkpoints. Every other rank works on a
   private copy of the store taken after rank 0 has seeded (or rewound, on resume); the new tasks and solve
   statistics of every rank are all-gathered and applied on every rank in rank order, so all buffers stay equal
   (same rows, same ids); the rollout log goes to rank 0 only.

Rules the collectives impose: every rank must call the same collectives in the same order. The store methods
that write (``add_tasks``, ``record_solve_stats_many``, ``log_rollouts``) are collectives in a multi-process run,
so they must be called unconditionally (with an empty list when there is nothing to write). Seeding, which calls
them a data-dependent number of times, runs on rank 0 alone before the others copy its store.

The checkpoint directory must be on a file system every rank can read (one machine, or a shared one).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from azr.errors import AzrError

if TYPE_CHECKING:
    from azr.seams import TaskStoreLike
    from azr.store import RolloutRow
    from azr.types import Task, TaskType

T = TypeVar("T")

TIMEOUT = timedelta(hours=2)
"""How long a rank waits at a collective: rank 0 seeds the buffers alone while the others wait."""

CPU_TRAP = (
    "accelerate launch --cpu started a single process, and only `azr train` starts the others itself "
    "(azr.launch); for several CPU processes run `accelerate launch --cpu --num_processes N -m azr train ...`, "
    "`accelerate launch --multi_gpu --num_processes N -m azr train ...` or `torchrun --nproc_per_node N -m azr train ...`"
)


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes; ``Dist()`` is the single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> int:
        """This rank's part of ``n`` items split as evenly as possible (the first ``n % W`` ranks get one more)."""
        return n // self.world_size + int(self.rank < n % self.world_size)

    def seed(self, seed: int) -> int:
        """A per-rank seed for sampling and task draws; rank 0 keeps ``seed`` (a single process is unchanged)."""
        return seed + 7919 * self.rank

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.world_size
        td.all_gather_object(out, obj)
        return out

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), None elsewhere."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        td.gather_object(obj, out, dst=0)
        return out

    def sum_(self, tensor: Any) -> Any:
        """Sum ``tensor`` over ranks in place (on the device the backend needs: CUDA for NCCL); returns it."""
        if self.enabled:
            import torch.distributed as td

            td.all_reduce(tensor, op=td.ReduceOp.SUM)
        return tensor

    def sum_grads_(self, params: Sequence[Any]) -> None:
        """Sum the gradients of ``params`` over ranks in place (a parameter without a gradient counts as zeros),
        in buckets of about :data:`BUCKET_BYTES` (one all-reduce per bucket, as DDP does, not one per tensor:
        a 7B model has 339 of them)."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as td

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in grad_buckets([p.grad for p in params], BUCKET_BYTES):
            flat = torch.cat([g.reshape(-1) for g in bucket])  # (sum of numels,)
            td.all_reduce(flat, op=td.ReduceOp.SUM)
            for g, part in zip(bucket, flat.split([g.numel() for g in bucket]), strict=True):
                g.copy_(part.view_as(g))

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on some rank (every rank gets the same answer)."""
        return any(self.all_gather(bool(flag)))

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            td.barrier()


BUCKET_BYTES = 64 * 1024**2
"""Gradient bytes summed by one all-reduce (:meth:`Dist.sum_grads_`)."""


def grad_buckets(grads: Sequence[Any], max_bytes: int) -> list[list[Any]]:
    """``grads`` in order, cut into runs of one dtype and device of at most ``max_bytes`` (a larger tensor alone)."""
    buckets: list[list[Any]] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        last = buckets[-1] if buckets else None
        if last and last[0].dtype == g.dtype and last[0].device == g.device and size + nbytes <= max_bytes:
            last.append(g)
            size += nbytes
        else:
            buckets.append([g])
            size = nbytes
    return buckets


def shared_run_dir(run_dir: Path, dist: Dist) -> Path:
    """Rank 0's run directory on every rank: ranks started without ``--run-dir`` each name their own
    ``runs/<time>``, which differ when they start in different seconds."""
    return Path(dist.all_gather(str(run_dir))[0]) if dist.enabled else run_dir


def accelerate_fsdp() -> bool:
    """Whether ``accelerate launch --use_fsdp`` started this process (it says so in ``ACCELERATE_USE_FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("true", "1")


def from_env(device: str) -> Dist:
    """The process group the launcher asked for (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), started once.

    ``device`` is the training device (``cuda`` or ``cpu``): NCCL and one GPU per local rank on CUDA, gloo on CPU.
    Without a launcher this is the single process and imports nothing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ:
            raise AzrError(CPU_TRAP)
        return Dist()
    import torch
    import torch.distributed as td

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not td.is_initialized():
        td.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
        _started.append(True)
    return Dist(rank, world, local)


_started: list[bool] = []  # whether from_env started the process group (then shutdown ends it)


def shutdown(dist: Dist) -> None:
    """End the process group if :func:`from_env` started it (a no-op for a single process)."""
    if dist.enabled and _started:
        import torch.distributed as td

        td.barrier()  # no rank leaves while another still needs a collective (rank 0 saving, for one)
        td.destroy_process_group()
        _started.clear()


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite store (its write-ahead log included) through SQLite's backup API."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in (target, target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        stale.unlink(missing_ok=True)
    src, dst = sqlite3.connect(str(source)), sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def rank_store_dir(run_dir: Path, dist: Dist) -> Path:
    """Where rank ``r > 0`` keeps its private copy of the store (inside the run directory, removed at the end)."""
    return run_dir / ".ranks" / f"rank-{dist.rank}"


def remove_rank_dir(run_dir: Path, dist: Dist) -> None:
    """Delete this rank's private store copy (and the ``.ranks`` folder once it is empty)."""
    own = rank_store_dir(run_dir, dist)
    shutil.rmtree(own, ignore_errors=True)
    try:
        own.parent.rmdir()
    except OSError:
        pass  # another rank's copy is still there


class SharedStore:
    """A :class:`azr.store.TaskStore` whose writes every rank applies alike (see the module docstring).

    Reads go to the local store (equal on every rank). Each write method is a collective.
    """

    def __init__(self, store: TaskStoreLike, dist: Dist) -> None:
        self._store = store
        self._dist = dist

    # -- reads: the local copy --------------------------------------------------------------------------------
    def contains(self, task: Task) -> bool:
        return self._store.contains(task)

    def count(self, type: TaskType | str | None = None) -> int:
        return self._store.count(type)

    def sample_references(
        self, type: TaskType | str, k: int, rng: random.Random, recency: bool = False
    ) -> list[Task]:
        return self._store.sample_references(type, k, rng, recency)

    def sample_for_solving(self, type: TaskType | str, n: int, step: int, rng: random.Random) -> list[Task]:
        return self._store.sample_for_solving(type, n, step, rng)

    # -- writes: collectives ----------------------------------------------------------------------------------
    def add_tasks(self, tasks: Iterable[Task], step: int) -> int:
        """Every rank's new tasks, added in rank order on every rank; returns the number added in total."""
        return self._store.add_tasks([t for part in self._dist.all_gather(list(tasks)) for t in part], step)

    def record_solve_stats_many(self, stats: Iterable[tuple[int, int, int]]) -> None:
        self._store.record_solve_stats_many([s for part in self._dist.all_gather(list(stats)) for s in part])

    def log_rollouts(self, rows: Iterable[RolloutRow | Mapping[str, object]]) -> int:
        """Every rank's rows, written by rank 0 alone (the run's ``tasks.sqlite``)."""
        parts = self._dist.gather(list(rows))
        return self._store.log_rollouts([r for part in parts for r in part]) if parts is not None else 0


def metrics_view(samples: Sequence[Any], dist: Dist) -> list[Any]:
    """Every rank's samples, for the step's metrics, without their texts, token ids and prompts (not needed)."""
    if not dist.enabled:
        return list(samples)
    slim = [
        dataclasses.replace(
            s,
            prompt="",
            completion=dataclasses.replace(s.completion, text="", prompt_ids=[], token_ids=[], logprobs=[]),
        )
        for s in samples
    ]
    return [s for part in dist.all_gather(slim) for s in part]
