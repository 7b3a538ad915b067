"""Run configuration: frozen dataclasses grouped by concern, TOML files and ``--section.field=value`` overrides.

A run is described by one :class:`Config`, whose sections are in :mod:`azr.config_sections`. Every field has a
default and a help text (``azr train --help-config`` prints them all). Loading is strict: an unknown section or
key, or a value of the wrong type, raises :class:`ConfigError` with a message naming the key. The resolved config is written into every run directory.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
import warnings
from pathlib import Path
from typing import Any

from azr.config_sections import (
    SECTIONS,
    AlgorithmConfig,
    Config,
    ExecutorConfig,
    LoggingConfig,
    ModelConfig,
    RolloutConfig,
    SafetyConfig,
    SelfPlayConfig,
    TrainingConfig,
)

__all__ = [
    "DEFAULT_RECIPE", "RECIPES_DIR", "RENAMED_KEYS", "SECTIONS", "AlgorithmConfig", "Config", "ConfigError",
    "ExecutorConfig", "LoggingConfig", "ModelConfig", "RolloutConfig", "SafetyConfig", "SelfPlayConfig",
    "TrainingConfig", "describe", "from_dict", "load", "parse_overrides", "to_dict", "to_toml", "validate",
]  # fmt: skip

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "cpu-smollm2.toml"
"""What ``azr train`` and ``azr seed`` run without ``--config``: the CPU SmolLM2 recipe (``azr train --help-config``
prints its values). The dataclass defaults are not a run anyone makes: they are the paper's algorithm
(TRR++, PPO-clip, lr 1e-6, temperature 1.0, 8 Monte-Carlo solves) at a scale a test affords (B = 4 prompts per
group instead of 64, 16 seed tasks instead of 256, 10 steps), the base every TOML file and override applies to.
``configs/paper-7b.toml`` spells out the paper's full settings."""


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the offending key."""


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Check ``value`` against the annotated type ``target``; ints are accepted where floats are expected."""
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, target) or (target is int and isinstance(value, bool)):  # target may be a union
        name = getattr(target, "__name__", str(target))
        raise ConfigError(f"{key}: expected {name}, got {value!r}")
    return value


def from_dict(data: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from nested ``{section: {field: value}}`` data on top of ``base`` (default: defaults)."""
    base = base or Config()
    sections = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of key = value")
        hints = typing.get_type_hints(SECTIONS[section])
        changes = {}
        for old_key, value in values.items():
            key = _renamed(section, old_key, values)
            if key not in hints:
                raise ConfigError(f"unknown config key {section}.{key} (see `azr train --help-config`)")
            changes[key] = _coerce(f"{section}.{key}", value, hints[key])
        sections[section] = dataclasses.replace(getattr(base, section), **changes)
    cfg = dataclasses.replace(base, **sections)
    validate(cfg)
    return cfg


RENAMED_KEYS = {
    "selfplay.n_seed": "selfplay.n_seed_tasks",
    "selfplay.seed_file": "selfplay.seed_tasks_file",
    "selfplay.max_seed_rounds": "selfplay.max_seeding_rounds",
}
"""Old key -> new key. An old key still loads, with a warning (run directories keep the config.toml they started
with); a table that names a key by both names is an error."""


def _renamed(section: str, key: str, values: dict[str, Any]) -> str:
    new = RENAMED_KEYS.get(f"{section}.{key}")
    if new is None:
        return key
    name = new.partition(".")[2]
    if name in values:
        raise ConfigError(f"{section}.{key} and {new} are one key: keep {new}")
    warnings.warn(f"config key {section}.{key} is now {new}", FutureWarning, stacklevel=4)
    return name


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a TOML run file (or the defaults) and apply ``section.field=value`` overrides."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: invalid TOML: {e}") from None
        cfg = from_dict(data, cfg)
    if overrides:
        cfg = from_dict(parse_overrides(overrides), cfg)
    return cfg


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Turn ``["training.lr=1e-5", "model.lora=true"]`` into nested data, parsing values as TOML literals."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.removeprefix("--").partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"bad override {item!r}: use --section.field=value")
        out.setdefault(section, {})[name] = _parse_value(raw)
    return out


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare string such as a model name or path


_CHOICES = {
    "rollout.backend": ("hf", "vllm", "scripted"),
    "model.dtype": ("auto", "bf16", "fp32"),
    "algorithm.advantage": ("trr++", "trr++-token"),
    "algorithm.reward": ("paper", "reference"),
    "executor.min_tier": ("none", "rlimits", "seccomp", "bwrap"),
    "selfplay.reference_sampling": ("uniform", "recency"),
    "training.device": ("auto", "cpu", "cuda"),
    "logging.eval_demo_think": ("sentence", "trace"),  # azr.evaluation.demos.DEMO_THINKS
}


def validate(cfg: Config) -> None:
    """Reject values that have the right type but make no sense; the message names the key."""
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    positive = [
        "selfplay.batch_size", "selfplay.n_mc_rollouts", "selfplay.n_seed_tasks", "selfplay.induction_inputs",
        "rollout.max_new_tokens_propose", "rollout.max_new_tokens_solve", "rollout.generation_batch_size",
        "executor.workers", "executor.timeout_s", "executor.memory_mb", "executor.determinism_runs",
        "training.micro_batch_size", "training.save_every", "training.keep_last", "training.lr",
        "algorithm.ppo_mini_batches", "algorithm.ppo_epochs",
    ]  # fmt: skip
    for key in positive:
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) <= 0:
            raise ConfigError(f"{key} must be > 0")
    if cfg.logging.eval_shots < 0:
        raise ConfigError("logging.eval_shots must be >= 0")
    sp = cfg.selfplay
    if not 0 < sp.induction_visible < sp.induction_inputs:
        raise ConfigError("selfplay.induction_visible must be between 1 and selfplay.induction_inputs - 1")
    if sp.induction_min_valid > sp.induction_inputs:
        raise ConfigError("selfplay.induction_min_valid cannot exceed selfplay.induction_inputs")
    if sp.demo_trace < 0 or (sp.demo_trace and not sp.n_shots):
        raise ConfigError("selfplay.demo_trace must be >= 0, and needs selfplay.n_shots > 0 (0 turns it off)")
    if sp.min_program_nodes < 0:
        raise ConfigError("selfplay.min_program_nodes must be >= 0 (0 turns the check off)")
    if sp.buffer_cap < 0 or 0 < sp.buffer_cap < sp.n_seed_tasks:
        raise ConfigError("selfplay.buffer_cap must be 0 (unbounded) or >= selfplay.n_seed_tasks")
    if cfg.training.micro_batch_tokens < 0:
        raise ConfigError("training.micro_batch_tokens must be >= 0 (0 turns it off)")
    _validate_algorithm(cfg.algorithm, sp)
    if cfg.executor.determinism_runs < 2:
        raise ConfigError("executor.determinism_runs must be >= 2 (determinism needs two separate runs)")
    if isinstance(cfg.training.bf16_autocast, str) and cfg.training.bf16_autocast != "auto":
        raise ConfigError(
            f"training.bf16_autocast: {cfg.training.bf16_autocast!r} is not auto, true or false"
        )
    if cfg.training.fsdp and (cfg.model.lora or cfg.algorithm.kl_coef > 0):
        raise ConfigError(
            "training.fsdp shards full fine-tuning without a KL reference: set model.lora = false and "
            "algorithm.kl_coef = 0, or training.fsdp = false (LoRA's few trainable weights need no sharding)"
        )
    module, colon, attr = cfg.safety.detector.partition(":")
    if cfg.safety.detector not in ("lexicon", "off") and not (colon and module and attr.isidentifier()):
        raise ConfigError(f"safety.detector: {cfg.safety.detector!r} is not lexicon, off or module:callable")
    if not 0 < cfg.rollout.top_p <= 1 or cfg.rollout.temperature < 0:
        raise ConfigError("rollout.top_p must be in (0, 1] and rollout.temperature >= 0")


def _validate_algorithm(a: AlgorithmConfig, sp: SelfPlayConfig) -> None:
    if a.kl_coef < 0:
        raise ConfigError("algorithm.kl_coef must be >= 0")
    if a.solve_nll_coef < 0:
        raise ConfigError("algorithm.solve_nll_coef must be >= 0 (0 turns it off)")
    if a.trace_nll_coef < 0 or (a.trace_nll_coef and not sp.demo_trace):
        raise ConfigError(
            "algorithm.trace_nll_coef must be >= 0, and needs selfplay.demo_trace > 0 (0 turns it off)"
        )
    if not a.policy_gradient and a.solve_nll_coef <= 0 and a.trace_nll_coef <= 0:
        raise ConfigError(
            "algorithm.policy_gradient = false trains nothing unless solve_nll_coef or trace_nll_coef > 0"
        )


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Nested plain data (for TOML/JSON dumps)."""
    return dataclasses.asdict(cfg)


def to_toml(cfg: Config) -> str:
    """Render a config as a TOML run file that :func:`load` reads back to an equal config."""
    lines = []
    for section, values in to_dict(cfg).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def describe(cfg: Config | None = None) -> str:
    """Every section and field with its value in ``cfg`` (the dataclass defaults when None) and help text; a value
    that differs from the dataclass default names that default too."""
    cfg = cfg or Config()
    lines = []
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        values = getattr(cfg, section)
        for f in dataclasses.fields(cls):
            value = getattr(values, f.name)
            differs = "" if value == f.default else f" (dataclass default {json.dumps(f.default)})"
            lines.append(f"  {f.name} = {json.dumps(value)}  # {f.metadata.get('help', '')}{differs}")
    return "\n".join(lines)
