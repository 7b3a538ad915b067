"""``azr train``: build every component, seed, then run self-play steps with checkpoints and clean stops.

The order matters: the sandbox pool starts before the model is loaded (forking a process that holds a model is
slow), and a resumed run first rewinds the task store and the metrics log to its last checkpoint, so that no step
appears twice and no task from a lost step lingers.

Under a launcher (``torchrun`` or ``accelerate launch --multi_gpu``; see :mod:`azr.distributed`) every process
runs this loop on its share of each step's prompts. Rank 0 alone seeds, rewinds, writes the store, the metrics
and the checkpoints, and prints; the others copy its store once it is ready. Ctrl-C then always finishes the
current step and saves (a step left half-way on one rank would leave the others waiting in a collective).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from azr.config import Config, ConfigError, load, to_dict, to_toml, validate
from azr.distributed import (
    Dist,
    SharedStore,
    accelerate_fsdp,
    copy_store,
    from_env,
    rank_store_dir,
    remove_rank_dir,
    shared_run_dir,
    shutdown,
)
from azr.errors import AzrError
from azr.fsutil import atomic_write_text
from azr.metrics import MetricsLogger, format_step_line, rewind_metrics, sample_table
from azr.runtime import release_freed_memory
from azr.selfplay.samples import StepResult
from azr.selfplay.step import SelfPlay
from azr.store import TaskStore
from azr.terminal import InterruptGuard, progress_bars
from azr.training import checkpoint
from azr.training.memory import process_memory
from azr.types import Role

if TYPE_CHECKING:
    from azr.rollout import Backend
    from azr.seams import ExecutorLike
    from azr.training.trainer import Trainer

CONFIG_FILE = "config.toml"
STORE_FILE = "tasks.sqlite"


@dataclass
class Run:
    """Everything a training run holds."""

    cfg: Config
    run_dir: Path
    selfplay: SelfPlay
    trainer: Trainer
    backend: Backend
    executor: ExecutorLike
    store: TaskStore
    step: int = 0
    dist: Dist = dataclasses.field(default_factory=Dist)


def prepare_config(config_path: str | None, overrides: list[str], run_dir: Path, resume: bool) -> Config:
    """The run's config: on resume the saved one (plus overrides), else the file (plus overrides)."""
    saved = run_dir / CONFIG_FILE
    if resume:
        if not saved.is_file():
            raise AzrError(
                f"{run_dir} is not a run directory (no {CONFIG_FILE}); start a run with `azr train`"
            )
        return load(saved, overrides)
    if saved.is_file() and any(run_dir.glob("checkpoints/step-*")):
        raise AzrError(f"{run_dir} already holds a run: continue it with `azr train --resume {run_dir}`")
    return load(config_path, overrides)


def set_seeds(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


BackendFactory = Callable[[Any, Any], "Backend"]  # (model, tokenizer) -> Backend


def build(
    cfg: Config,
    run_dir: Path,
    console: Console,
    backend_factory: BackendFactory | None = None,
    dist: Dist | None = None,
) -> Run:
    """Start the sandbox, load the model, and assemble the run (no step is taken).

    ``backend_factory`` replaces the configured rollout backend (tests pass a scripted one). ``dist``: this
    process's rank (default: the only process).
    """
    from azr.executor import Executor
    from azr.models import load_model
    from azr.rollout import make_backend
    from azr.training.trainer import Trainer

    dist = dist or Dist()
    _check_eval_benches(cfg)
    share = rank_config(cfg, dist)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        atomic_write_text(run_dir / CONFIG_FILE, to_toml(cfg))
    set_seeds(cfg.training.seed)
    executor = Executor(cfg.executor)  # before the model: its workers must not be forks of a big process
    console.print(f"sandbox: tier [bold]{executor.tier}[/bold], {cfg.executor.workers} workers")
    t0 = time.perf_counter()
    model, tokenizer = load_model(cfg.model.name, dtype=weight_dtype(cfg), device=_device(cfg))
    console.print(f"model: {cfg.model.name} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M params, "
                  f"{time.perf_counter() - t0:.1f} s)")  # fmt: skip
    trainer = Trainer(model, tokenizer, cfg.training, cfg.algorithm, cfg.model, dist=dist)
    _check_memory(cfg, trainer, console)
    if backend_factory is not None:
        backend = backend_factory(trainer.model, tokenizer)
    else:
        kw = {"num_threads": cfg.rollout.num_threads or None} if cfg.rollout.backend == "hf" else {}
        backend = make_backend(cfg.rollout.backend, trainer.model, tokenizer, cfg.rollout, **kw)
    store_dir = run_dir if dist.is_main else rank_store_dir(run_dir, dist)  # rank > 0: replaced by a copy
    store = TaskStore(store_dir / STORE_FILE, cap=cfg.selfplay.buffer_cap)
    sp = SelfPlay(share, backend, executor, store, tokenizer, seed=dist.seed(cfg.training.seed), dist=dist)
    return Run(cfg, run_dir, sp, trainer, backend, executor, store, dist=dist)


def _launcher_fsdp(cfg: Config, dist: Dist, console: Console) -> Config:
    """``accelerate launch --use_fsdp``: shard with azr's FSDP2 (``training.fsdp``; accelerate's own FSDP options
    do not apply, azr wraps the model itself)."""
    if cfg.training.fsdp or not dist.enabled or not accelerate_fsdp():
        return cfg
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, fsdp=True))
    validate(cfg)
    console.print("accelerate --use_fsdp: sharding the model with FSDP2 (training.fsdp = true)")
    return cfg


def rank_config(cfg: Config, dist: Dist) -> Config:
    """The config this rank's self-play runs: its share of ``selfplay.batch_size`` (the whole of it alone)."""
    if not dist.enabled:
        return cfg
    if cfg.selfplay.batch_size < dist.world_size:
        raise ConfigError(
            f"selfplay.batch_size ({cfg.selfplay.batch_size}) must be >= the number of processes "
            f"({dist.world_size}): every process takes a share of each group's prompts"
        )
    share = dataclasses.replace(cfg.selfplay, batch_size=dist.share(cfg.selfplay.batch_size))
    return dataclasses.replace(cfg, selfplay=share)


def weight_dtype(cfg: Config) -> Any:
    """The dtype the weights are loaded in (``model.dtype``; see its help)."""
    import torch

    from azr.precision import native_bf16

    choice = cfg.model.dtype
    if choice == "auto":
        choice = "bf16" if cfg.model.lora and native_bf16(torch.device(_device(cfg))) else "fp32"
    return torch.bfloat16 if choice == "bf16" else torch.float32


def _check_memory(cfg: Config, trainer: Trainer, console: Console) -> None:
    """Print the start-up memory estimate; on CUDA refuse a run that cannot fit (:mod:`azr.training.memory`)."""
    from azr.training import memory

    device = _device(cfg)
    vllm = 0
    if device == "cuda" and cfg.rollout.backend == "vllm":
        import torch

        vllm = int(cfg.rollout.vllm_gpu_memory_utilization * torch.cuda.mem_get_info()[1])
    trainable = sum(p.numel() for p in trainer.params)
    shards = trainer.dist.world_size if trainer.sharded else 1
    master = trainer.params[0].element_size() if trainer.params else 0
    est = memory.estimate(trainer.model, cfg, trainable, vllm, shards, master, device)
    console.print(est.line())
    warning = memory.check(est, device, resident=est.weights + est.reference)
    if warning:
        console.print(f"[yellow]{warning}[/yellow]")


def _check_eval_benches(cfg: Config) -> None:
    """An unknown in-training benchmark is a config error at start, not a warning at every evaluation."""
    if not cfg.logging.eval_every:
        return
    from azr.evaluation.benchmarks import resolve

    try:
        resolve([b for b in cfg.logging.eval_benches.split(",") if b.strip()])
    except ValueError as e:
        raise ConfigError(f"logging.eval_benches: {e}") from None


def restore(run: Run, console: Console) -> None:
    """Load the newest checkpoint and rewind the store and metrics log to it (rank 0; the others copy later)."""
    path = checkpoint.latest(run.run_dir)
    step = 0
    if path is not None:
        step, extra = checkpoint.load(path, run.trainer)
        state = _rank_rng(extra, run.dist)
        if state is not None:
            run.selfplay.rng.setstate(_to_tuple(state))
        run.backend.update_weights(run.trainer.model)
    if run.dist.is_main:
        run.store.rewind(step)
        rewind_metrics(run.run_dir, step)
    run.step = step
    console.print(
        f"resumed at step {step}"
        + (f" from {path.name}" if path else " (no checkpoint: from the seed tasks)")
    )


def _rank_rng(extra: dict[str, Any], dist: Dist) -> Any:
    """This rank's saved task-draw RNG state; None when the run was saved with fewer processes (a fresh one)."""
    if not dist.enabled:
        return extra.get("selfplay_rng")
    states = extra.get("selfplay_rng_ranks") or []
    return states[dist.rank] if dist.rank < len(states) else None


def save(run: Run) -> Path:
    """Checkpoint the run; with several processes every rank calls it (its RNG state is gathered), rank 0 writes."""
    states = run.dist.gather(run.selfplay.rng.getstate())
    sharded = run.trainer.sharded_state() if run.trainer.sharded else None  # a collective
    if not run.dist.is_main:
        return checkpoint.step_dir(run.run_dir, run.step)
    extra: dict[str, Any] = {"selfplay_rng": run.selfplay.rng.getstate(), "store_max_step": run.step}
    if run.dist.enabled:
        extra["selfplay_rng_ranks"] = states
    return checkpoint.save(
        run.run_dir,
        run.step,
        run.trainer,
        extra,
        to_dict(run.cfg),
        keep_last=run.cfg.training.keep_last,
        sharded=sharded,
    )


def _share_store(run: Run) -> None:
    """Once rank 0's store is rewound and seeded, the other ranks copy it; then every rank writes through
    :class:`SharedStore` (a no-op for a single process)."""
    if not run.dist.enabled:
        return
    run.dist.barrier()
    if not run.dist.is_main:
        path = run.store.path
        run.store.close()
        copy_store(run.run_dir / STORE_FILE, path)
        run.store = TaskStore(path, cap=run.cfg.selfplay.buffer_cap)
    run.selfplay.store = SharedStore(run.store, run.dist)


def train(
    cfg: Config,
    run_dir: Path,
    resume: bool = False,
    console: Console | None = None,
    backend_factory: BackendFactory | None = None,
) -> int:
    """Run (or continue) self-play until ``cfg.training.steps``; returns the exit status.

    Under a launcher this is one rank of the run (:mod:`azr.distributed`); only rank 0 prints.
    """
    dist = from_env(_device(cfg))
    run_dir = shared_run_dir(run_dir, dist)
    console = (console or Console()) if dist.is_main else Console(quiet=True)
    try:
        cfg = _launcher_fsdp(cfg, dist, console)
        run = build(cfg, run_dir, console, backend_factory, dist)
    except BaseException:
        shutdown(dist)
        raise
    try:
        if resume:
            restore(run, console)
        with progress_bars(cfg, console) as progress:
            if dist.is_main:
                console.print(_seed(run, progress).summary)
            _share_store(run)
            logger = MetricsLogger(run_dir, cfg.logging, run_dir.name, to_dict(cfg)) if dist.is_main else None
            with logger or nullcontext():
                return _steps(run, logger, progress, console)
    finally:
        run.executor.close()
        run.store.close()
        if not dist.is_main:
            remove_rank_dir(run_dir, dist)
        shutdown(dist)


def _seed(run: Run, progress: Any) -> Any:
    """The seeding stage; with several processes rank 0 runs it alone on its own store, before the others copy."""
    from azr.selfplay.seeding import seed_buffers

    return seed_buffers(run.selfplay, progress=progress.callback, batch_size=run.cfg.selfplay.batch_size)


def _steps(run: Run, log: MetricsLogger | None, progress: Any, console: Console) -> int:
    """The steps; ``log`` is None on ranks other than 0 (they neither log, evaluate nor print)."""
    total = run.cfg.training.steps
    guard = InterruptGuard(defer=run.dist.enabled)
    with guard.installed():
        while run.step < total:
            try:
                t0 = time.perf_counter()
                result = run.selfplay.step(run.step + 1, progress=progress.callback)
                release_freed_memory()  # generation's KV caches: the update should not hold them too
                with guard.critical():  # a Ctrl-C here waits: a half-applied update would corrupt the state
                    train_metrics = _update(run, result, progress)
                    run.step += 1
                release_freed_memory()  # and the update's activations and gradients stay out of generation
            except KeyboardInterrupt:
                path = save(run)
                console.print(
                    f"interrupted: saved step {run.step} to {path}; continue with `azr train --resume {run.run_dir}`"
                )
                return 130
            metrics = {**result.metrics, **train_metrics, "perf/seconds/step": time.perf_counter() - t0}
            metrics["dist/world_size"] = run.dist.world_size
            metrics.update(process_memory())
            if log is not None:
                metrics.update(_maybe_evaluate(run, console))
                log.log(run.step, metrics)
                console.print(format_step_line(run.step, total, metrics), soft_wrap=True)
                _maybe_show_samples(run, result, console)
            stop = run.dist.any(guard.stop_requested) if run.dist.enabled else guard.stop_requested
            if run.step % run.cfg.training.save_every == 0 or run.step == total or stop:
                save(run)
            if stop:
                console.print(
                    f"stopped after step {run.step}; continue with `azr train --resume {run.run_dir}`"
                )
                return 130
    console.print(f"done: {run.step} steps in {run.run_dir}")
    return 0


def _update(run: Run, result: StepResult, progress: Any) -> dict[str, float]:
    """The policy update on the step's samples, each scored at the temperature it was sampled at."""
    from azr.training.trainer import TrainBatch

    samples = [s for s in result.samples if s.completion.token_ids]
    batch = TrainBatch(
        prompt_ids=[s.completion.prompt_ids for s in samples],
        completion_ids=[s.completion.token_ids for s in samples],
        advantages=[s.advantage for s in samples],
        temperatures=[s.temperature for s in samples],
    )
    progress.callback("update", 0, 1)
    t0 = time.perf_counter()
    out = run.trainer.step(batch)
    run.backend.update_weights(run.trainer.model)
    progress.callback("update", 1, 1)
    metrics = {f"train/{k}": float(v) for k, v in out.items() if isinstance(v, int | float)}
    metrics["perf/seconds/update"] = time.perf_counter() - t0
    return metrics


def _maybe_evaluate(run: Run, console: Console) -> dict[str, float]:
    """Every ``logging.eval_every`` steps, a small held-out check (``logging.eval_benches``, first
    ``eval_limit`` items, ``eval_shots`` fixed demonstrations in the ``eval_demo_think`` form) with the run's
    own backend and sandbox."""
    lc = run.cfg.logging
    if not lc.eval_every or run.step % lc.eval_every:
        return {}
    from azr.evaluation import evaluate

    try:
        evaluation = evaluate(
            run.backend,
            run.selfplay.tokenizer,
            run.executor,
            [b.strip() for b in lc.eval_benches.split(",") if b.strip()],
            limit=lc.eval_limit,
            shots=lc.eval_shots,
            demo_think=lc.eval_demo_think,
            data_dir=lc.eval_data_dir or None,
            max_new_tokens=run.cfg.rollout.max_new_tokens_solve,
        )
    except Exception as e:  # an evaluation problem must never stop training
        console.print(f"[yellow]evaluation skipped at step {run.step}: {e}[/yellow]")
        return {}
    for name, reason in evaluation.skipped.items():
        console.print(f"[yellow]eval {name} skipped: {reason}[/yellow]")
    return {k: float(v) for k, v in evaluation.metrics().items()}


def _maybe_show_samples(run: Run, result: StepResult, console: Console) -> None:
    every = run.cfg.logging.sample_every
    if not every or run.step % every:
        return
    rows = []
    for role in (Role.PROPOSE, Role.SOLVE):
        for s in [s for s in result.samples if s.role is role][:3]:
            rows.append({"group": f"{s.task_type.value}/{role.value}", "prompt": s.prompt,
                         "reply": s.completion.text, "reward": s.reward})  # fmt: skip
    console.print(sample_table(rows))


def _device(cfg: Config) -> str:
    if cfg.training.device != "auto":
        return cfg.training.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


def with_steps(cfg: Config, steps: int | None) -> Config:
    if steps is None:
        return cfg
    if steps <= 0:
        raise ConfigError("--steps must be > 0")
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, steps=steps))
