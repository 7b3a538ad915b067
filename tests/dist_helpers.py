"""Helpers shared by the data-parallel and FSDP tests: the world size, training settings, a batch of uneven
sequences, each rank's share of it, and spawning the worker processes."""

from __future__ import annotations

import json
import socket

import torch
import torch.multiprocessing as mp

from azr.config import AlgorithmConfig, TrainingConfig
from azr.training.trainer import TrainBatch

WORLD = 2
# lr 1e-3: AdamW's first step is about lr x sign(grad), so a parameter whose gradient is near zero moves by up to
# lr on float noise alone (summed over ranks vs over one batch); at 1e-2 that reached 2e-5 on an AVX2 CPU.
TRAIN = TrainingConfig(lr=1e-3, bf16_autocast=False, micro_batch_size=2, device="cpu")
ALGO = AlgorithmConfig(entropy_coef=0.01)  # the entropy term is token-normalised too: it must sum right


def batch(n: int = 7) -> TrainBatch:
    """Sequences of uneven lengths; 7 of them, so the two ranks hold 4 and 3."""
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(3, 300, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]  # fmt: skip
    replies = [torch.randint(3, 300, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
               for _ in range(n)]  # fmt: skip
    return TrainBatch(prompts, replies, torch.randn(n, generator=g).tolist(), temperatures=[0.7] * n)


def part(n: int, rank: int) -> list[int]:
    return list(range(rank, n, WORLD))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, out_dir, model_dir) -> list[dict]:
    """Run ``worker(rank, port, out_dir, model_dir)`` on WORLD processes; returns what each wrote to out-RANK.json."""
    mp.spawn(worker, args=(free_port(), str(out_dir), str(model_dir)), nprocs=WORLD, join=True)
    return [json.loads((out_dir / f"out-{r}.json").read_text()) for r in range(WORLD)]
