"""Seconds and peak memory per phase of a self-play step, against this machine's compute floor.

    .venv/bin/python bench/step.py [--steps 3] [--config configs/cpu-smollm2.toml] [--run-dir DIR]
        [--section.field=value ...]

Runs the real loop (real model, sandbox and updates) into a temporary run directory (``--run-dir`` keeps it) and
reports, per step and phase:

- **seconds**: prefill and decode (the hf backend times its prefill; decode is the rest of generation), sandbox
  (validation and scoring), update, store, and the whole step, from the ``perf/seconds/*`` metrics;
- **peak resident memory**: the trainer process's peak in each phase (its high-water mark, reset at each phase
  start through ``/proc/self/clear_refs``) plus the resident memory of the sandbox workers, and over the whole run;
- **the compute floor**: the FLOPs the step must do (:mod:`azr.flops`: prefill, decode and ``3 x ppo_epochs``
  update passes, plus a log-prob pass per reference or old policy the update needs, attention included, from the
  model's shapes and the step's tokens) divided by the dense matrix-product throughput of this machine, measured in
  this run before and after the steps (the better of the two counts), at the precision the step uses (bf16 where
  ``training.bf16_autocast`` turns it on, else fp32).

It prints step time / floor and writes everything to ``bench/results/step.json``. Absolute seconds differ from
machine to machine; the ratio is what to compare. The first step warms caches and allocators: the summary leaves
it out when there are several.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the azr command does, before torch is imported

import argparse
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from azr.config import Config, load
from azr.flops import Shape, Work
from azr.fsutil import atomic_write_text
from azr.loop import train, with_steps
from azr.metrics import read_metrics
from azr.precision import use_bf16
from azr.runtime import configure_process, jemalloc_active, use_jemalloc
from azr.training.memory import descendants, status_kib

PHASES = ("prefill", "decode", "sandbox", "update", "store")
MEMORY_PHASES = ("generate", "sandbox", "update")


class PeakMemory:
    """The trainer's high-water mark per phase, and the workers' resident memory, in bytes."""

    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.resettable = self._reset()

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
            return True
        except OSError:
            return False

    def workers(self) -> int:
        return sum(status_kib(p, "VmRSS") for p in descendants(os.getpid())) * 1024

    @contextmanager
    def phase(self, name: str):
        self._reset()
        try:
            yield
        finally:
            peak = status_kib(os.getpid(), "VmHWM") * 1024 + self.workers()
            self.peaks[name] = max(self.peaks.get(name, 0), peak)


def _instrument(memory: PeakMemory) -> None:
    """Wrap the phases' entry points so that each one's peak memory is recorded (this process only)."""
    from azr.executor import Executor
    from azr.rollout.hf import HFBackend
    from azr.training.trainer import Trainer

    def wrap(cls: Any, method: str, name: str) -> None:
        inner = getattr(cls, method)

        def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
            with memory.phase(name):
                return inner(self, *args, **kwargs)

        setattr(cls, method, wrapped)

    wrap(HFBackend, "generate", "generate")
    wrap(Executor, "run_jobs", "sandbox")
    wrap(Trainer, "step", "update")


def matmul_flops_per_s(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best rate of an ``n x n`` by ``n x n`` matrix product on this machine, at ``dtype``, with torch's threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t0))
    return best


def update_passes(cfg: Config) -> int:
    """Forward-pass equivalents of one update: forward + backward (3) per epoch, plus the no-grad log-prob
    passes it needs (old policy with several optimizer steps, reference policy with a KL term)."""
    alg = cfg.algorithm
    passes = 3 * alg.ppo_epochs
    passes += 1 if alg.ppo_epochs * alg.ppo_mini_batches > 1 else 0
    return passes + (1 if alg.kl_coef > 0 else 0)


def step_flops(row: dict[str, float], shape: Shape, passes: int) -> dict[str, float]:
    """FLOPs of one step's prefill, decode and update, from its ``perf/work/*`` and ``train/work_*`` metrics."""

    def work(prefix: str, names: tuple[str, str, str]) -> Work:
        return Work(*(int(row.get(f"{prefix}{n}", 0)) for n in names))

    prefill = work("perf/work/prefill_", ("tokens", "context", "logits"))
    decode_tokens = int(row.get("perf/work/decode_tokens", 0))
    decode = Work(decode_tokens, int(row.get("perf/work/decode_context", 0)), decode_tokens)
    update = work("train/work_", ("tokens", "context", "logits"))
    return {
        "prefill": shape.forward_flops(prefill),
        "decode": shape.forward_flops(decode),
        "update": passes * shape.forward_flops(update),
    }


def phase_seconds(row: dict[str, float]) -> dict[str, float]:
    prefill = row.get("perf/seconds/prefill", 0.0)
    return {
        "prefill": prefill,
        "decode": row.get("perf/seconds/generate", 0.0) - prefill,
        "sandbox": row.get("perf/seconds/execute", 0.0),
        "update": row.get("perf/seconds/update", 0.0),
        "store": row.get("perf/seconds/store", 0.0),
        "step": row.get("perf/seconds/step", 0.0),
    }


def _run(cfg: Config, run_dir: str, console: Console) -> list[dict[str, Any]]:
    if run_dir:
        train(cfg, Path(run_dir), console=console)
        return read_metrics(Path(run_dir))
    with tempfile.TemporaryDirectory(prefix="azr-step-bench-") as tmp:
        train(cfg, Path(tmp) / "run", console=console)
        return read_metrics(Path(tmp) / "run")


def _model_shape(cfg: Config) -> Shape:
    """The model's shapes from its config.json alone (loading the weights here would add to the peak)."""
    from transformers import AutoConfig

    from azr.models import model_path

    return Shape.from_config(AutoConfig.from_pretrained(model_path(cfg.model.name)))


def main() -> None:
    use_jemalloc()  # as the azr command does (azr.runtime): re-executes with jemalloc preloaded where installed
    configure_process()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu-smollm2.toml")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="bench/results/step.json")
    parser.add_argument("--run-dir", default="", help="keep the run here instead of a temporary directory")
    args, overrides = parser.parse_known_args()
    cfg = with_steps(load(args.config, overrides), args.steps)
    console = Console()
    bf16 = use_bf16(cfg.training.bf16_autocast, torch.device("cpu"))
    dtype = torch.bfloat16 if bf16 else torch.float32
    rate_before = matmul_flops_per_s(dtype)
    malloc = "jemalloc" if jemalloc_active() else "glibc"
    console.print(f"malloc: {malloc} (AZR_ALLOCATOR=glibc for glibc's)")
    console.print(
        f"dense matmul throughput: {rate_before / 1e9:.1f} GFLOP/s ({dtype}, {torch.get_num_threads()} threads)"
    )
    shape = _model_shape(cfg)
    memory = PeakMemory()
    _instrument(memory)
    wall = time.perf_counter()
    rows = _run(cfg, args.run_dir, console)
    wall = time.perf_counter() - wall
    # Measured again after the run, the best of both counts: one low measurement (a noisy neighbour for a few
    # seconds) would raise the floor and flatter the ratio.
    rate_after = matmul_flops_per_s(dtype)
    rate = max(rate_before, rate_after)
    console.print(f"dense matmul throughput after the run: {rate_after / 1e9:.1f} GFLOP/s; the best counts")
    rest = status_kib(os.getpid(), "VmHWM") * 1024  # since the last phase (everything, if it cannot reset)
    peak_run = max([rest, *memory.peaks.values()])
    passes = update_passes(cfg)
    steps = []
    for row in rows:
        flops = step_flops(row, shape, passes)
        seconds = phase_seconds(row)
        floor = sum(flops.values()) / rate
        steps.append({"step": row["step"], "seconds": seconds, "flops": flops, "floor_s": floor})
    table = Table(title=f"one self-play step ({args.config}), seconds")
    for column in ("step", *PHASES, "step s", "floor s", "step / floor"):
        table.add_column(column, justify="right")
    for s in steps:
        cells = [f"{s['seconds'][p]:.1f}" for p in PHASES]
        ratio = s["seconds"]["step"] / max(s["floor_s"], 1e-9)
        table.add_row(
            str(s["step"]), *cells, f"{s['seconds']['step']:.1f}", f"{s['floor_s']:.1f}", f"{ratio:.2f}"
        )
    console.print(table)
    kept = steps[1:] if len(steps) > 1 else steps
    mean_step = statistics.mean(s["seconds"]["step"] for s in kept)
    mean_floor = statistics.mean(s["floor_s"] for s in kept)
    gib = 1024**3
    console.print(
        "peak resident memory (trainer + sandbox workers): "
        + ", ".join(f"{p} {memory.peaks.get(p, 0) / gib:.2f} GiB" for p in MEMORY_PHASES)
        + f"; whole run {peak_run / gib:.2f} GiB"
    )
    console.print(
        f"mean step {mean_step:.1f} s, compute floor {mean_floor:.1f} s: step / floor = "
        f"{mean_step / max(mean_floor, 1e-9):.2f}" + (" (first step left out)" if len(steps) > 1 else "")
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "config": args.config,
        "overrides": overrides,
        "cpu": _cpu_model(),
        "threads": torch.get_num_threads(),
        "malloc": malloc,
        "dtype": str(dtype),
        "matmul_flops_per_s": rate,
        "matmul_flops_per_s_measured": [rate_before, rate_after],
        "update_passes": passes,
        "steps": steps,
        "mean_step_s": mean_step,
        "mean_floor_s": mean_floor,
        "step_over_floor": mean_step / max(mean_floor, 1e-9),
        "peak_rss_bytes": {**memory.peaks, "run": peak_run},
        "wall_s": wall,
    }
    atomic_write_text(out, json.dumps(result, indent=2))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
