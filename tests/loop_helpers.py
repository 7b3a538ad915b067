"""Helpers shared by the loop, browser and FSDP tests: a deterministic scripted reply, a tiny-model training
config, and one ``azr train`` run into a directory."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

from rich.console import Console

from azr.config import from_dict
from azr.loop import train
from azr.rollout import ScriptedBackend
from selfplay_helpers import scripted_reply


def pure_reply(prompt: str) -> str:
    """A reply that depends on the prompt alone, so two runs see identical rollouts."""
    return scripted_reply(prompt, [zlib.crc32(prompt.encode())])


def cfg_for(model_dir, steps: int, save_every: int = 1):
    return from_dict(
        {
            "model": {"name": str(model_dir)},
            "selfplay": {
                "batch_size": 2,
                "n_mc_rollouts": 2,
                "n_references": 2,
                "n_seed_tasks": 2,
                "induction_min_valid": 6,
            },
            "rollout": {
                "max_new_tokens_propose": 512,
                "max_new_tokens_solve": 256,
                "max_prompt_tokens": 4096,
            },
            "training": {
                "steps": steps,
                "save_every": save_every,
                "lr": 1e-3,
                "keep_last": 5,
                "bf16_autocast": False,
            },
            "logging": {"progress": False, "sample_every": 0},
        }
    )


def run(cfg, run_dir, resume=False):
    factory = lambda model, tok: ScriptedBackend(pure_reply, tokenizer=tok)  # noqa: E731
    console = Console(file=io.StringIO(), width=200)
    code = train(cfg, run_dir, resume=resume, console=console, backend_factory=factory)
    return code, console.file.getvalue()


def small_config_file(tmp_path: Path, model_dir: Path) -> Path:
    """A TOML config of a one-minute tiny-model run (the soak and the accelerate launch tests)."""
    text = f"""
[model]
name = "{model_dir}"
[rollout]
max_new_tokens_propose = 24
max_new_tokens_solve = 12
max_prompt_tokens = 600
generation_batch_size = 8
[selfplay]
batch_size = 2
n_mc_rollouts = 2
n_references = 1
n_shots = 1
n_seed_tasks = 4
seed_tasks_file = "cpu-warmstart.jsonl"
[executor]
workers = 2
[training]
save_every = 25
keep_last = 2
bf16_autocast = false
[logging]
progress = false
sample_every = 0
"""
    path = tmp_path / "soak.toml"
    path.write_text(text)
    return path
