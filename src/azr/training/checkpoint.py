"""Checkpoints of the whole training state, written atomically, so a run resumes exactly where it stopped.

Layout of ``RUN_DIR/checkpoints/step-000010/``::

    model/            save_pretrained: safetensors weights + config + tokenizer (or the LoRA adapter +
                      tokenizer); a full model loads with AutoModelForCausalLM.from_pretrained
    optimizer.pt      AdamW state (tensors only; loads with torch.load(weights_only=True))
    scheduler.pt      LR schedule state
    rng.pt            torch CPU (and CUDA) generator states
    rng.json          Python ``random`` and NumPy global generator states
    run_config.json   the resolved run config (``config_dict``)
    state.json        step, number of updates, the reference policy's checksum, ``extra_state`` (e.g. the task
                      store's state reference)

A checkpoint is assembled in a hidden temp directory next to its final place and renamed into place in one step,
so a crash leaves either the previous checkpoints or the complete new one, never a half-written directory.
Not in scope: the task store itself (the loop keeps it in SQLite and puts a reference in ``extra_state``).

The KL reference policy (``algorithm.kl_coef > 0``) is not saved: it is the run's initial model, and a resumed
trainer is built from that model again before :func:`load` (LoRA: the base model; full fine-tuning: the trainer
copies the weights it is built with). ``state.json`` keeps the checksum of those initial weights
(:meth:`Trainer.reference_checksum`) and :func:`load` refuses a trainer whose reference differs, e.g. because the
model directory changed since the run started.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from azr.training.trainer import Trainer

FORMAT_VERSION = 1
Sharded = tuple[dict[str, torch.Tensor], dict[str, Any]] | None
"""Under FSDP, the whole weights and optimizer state that every rank gathered for rank 0 to save."""
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(run_dir: str | Path, step: int) -> Path:
    """Where the checkpoint of ``step`` lives."""
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, path)``, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "state.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py = {
        "python": [version, list(internal), gauss],
        "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = state
    return py, tensors


def _set_rng_state(py: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss = py["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = py["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def _write(
    tmp: Path,
    step: int,
    trainer: Trainer,
    extra_state: dict[str, Any],
    config_dict: dict[str, Any],
    sharded: Sharded,
) -> None:
    weights, optimizer = sharded or (None, trainer.optimizer.state_dict())
    trainer.model.save_pretrained(tmp / "model", safe_serialization=True, state_dict=weights)
    trainer.tokenizer.save_pretrained(tmp / "model")
    torch.save(optimizer, tmp / "optimizer.pt")
    torch.save(trainer.scheduler.state_dict(), tmp / "scheduler.pt")
    py_rng, tensor_rng = _rng_state()
    _write_json(tmp / "rng.json", py_rng)
    torch.save(tensor_rng, tmp / "rng.pt")
    _write_json(tmp / "run_config.json", config_dict)
    state = {
        "format": FORMAT_VERSION,
        "step": step,
        "updates": trainer.updates,
        "lora": trainer.is_lora,
        "reference_checksum": trainer.reference_checksum(),
        "extra_state": extra_state,
    }
    _write_json(tmp / "state.json", state)  # written last: its presence marks a complete checkpoint


def save(
    run_dir: str | Path,
    step: int,
    trainer: Trainer,
    extra_state: dict[str, Any] | None = None,
    config_dict: dict[str, Any] | None = None,
    keep_last: int = 2,
    sharded: Sharded = None,
) -> Path:
    """Write the full training state for ``step`` atomically and prune to the newest ``keep_last``; return its path.

    ``extra_state`` and ``config_dict`` must be JSON-serialisable (checked before anything is written).
    ``sharded``: under FSDP, the whole weights and optimizer state (``Trainer.sharded_state``, gathered by every
    rank before rank 0 saves); by default the trainer's own.
    """
    extra_state, config_dict = extra_state or {}, config_dict or {}
    json.dumps(extra_state), json.dumps(config_dict)  # fail early, before touching the disk
    target = step_dir(run_dir, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        _write(tmp, step, trainer, extra_state, config_dict, sharded)
        if target.exists():  # re-saving a step: move the old one aside, then swap
            old = target.with_name(f".old-{target.name}-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune(run_dir, keep_last)
    return target


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, and leftovers of interrupted saves."""
    found = list_checkpoints(run_dir)
    for _, path in found[: max(len(found) - max(keep_last, 1), 0)]:
        shutil.rmtree(path, ignore_errors=True)
    root = Path(run_dir) / "checkpoints"
    for child in root.iterdir() if root.is_dir() else ():
        if child.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(child, ignore_errors=True)


def _load_model_weights(model_dir: Path, trainer: Trainer) -> None:
    from safetensors.torch import load_file

    if trainer.is_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(trainer.model, load_file(str(model_dir / "adapter_model.safetensors")))
        return
    state: dict[str, torch.Tensor] = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(file)))
    missing, unexpected = trainer.load_weights(state)
    tied = {k for k in missing if k.endswith("lm_head.weight")}
    if unexpected or set(missing) - tied:
        raise RuntimeError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")


def _check_reference(path: Path, saved: float | None, current: float | None) -> None:
    """Refuse to resume a KL-regularised run against a reference that is not the run's initial model.

    Nothing to compare when either side has no full-fine-tuning reference (kl_coef was 0, or LoRA). The tolerance
    only absorbs float64 summation order (another device); a different model changes the sum far more.
    """
    if saved is None or current is None:
        return
    if not math.isclose(saved, current, rel_tol=1e-9, abs_tol=1e-6):
        raise RuntimeError(
            f"{path}: the KL reference (the run's initial model) differs from the one the run started with "
            f"(weights checksum {current!r}, saved {saved!r}); resume from the same model.name"
        )


def _optimizer_state(file: Path, sharded: bool) -> dict[str, Any]:
    """The whole AdamW state of ``optimizer.pt``, on the CPU: the optimizer moves each tensor to its parameter's
    device, and under FSDP only this rank's shard of each reaches the GPU (one whole tensor at a time), instead of
    the whole state on every GPU (61 GB for 7B). Under FSDP the file is memory-mapped, so the ranks of a machine
    share its pages instead of each reading a private copy into RAM."""
    state: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=True, mmap=sharded)
    return state


def load(path: str | Path, trainer: Trainer) -> tuple[int, dict[str, Any]]:
    """Restore model (or adapter), optimizer, schedule and RNG states into ``trainer``; return (step, extra_state).

    ``trainer`` must be built the same way as the one that saved (same model architecture, LoRA setting and
    trainable parameters), as a fresh process would when resuming a run.
    """
    path = Path(path)
    state = json.loads((path / "state.json").read_text())
    if state.get("format") != FORMAT_VERSION:
        raise RuntimeError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
    if bool(state["lora"]) != trainer.is_lora:
        raise RuntimeError(
            f"{path}: saved with lora={state['lora']}, but the trainer has lora={trainer.is_lora}"
        )
    _check_reference(path, state.get("reference_checksum"), trainer.reference_checksum())
    with torch.no_grad():
        _load_model_weights(path / "model", trainer)
    trainer.load_optimizer_state(_optimizer_state(path / "optimizer.pt", sharded=trainer.sharded is not None))
    trainer.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    trainer.updates = int(state["updates"])
    rng_tensors = torch.load(path / "rng.pt", weights_only=True)
    _set_rng_state(json.loads((path / "rng.json").read_text()), rng_tensors)
    return int(state["step"]), dict(state["extra_state"])
