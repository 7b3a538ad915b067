"""Run configuration: frozen dataclasses grouped by concern, TOML files and ``--section.field=value`` overrides.

A run is described by one :class:`Config`. Every field has a default and a help text (``azr train --help-config``
prints them all). Loading is strict: an unknown section or key, or a value of the wrong type, raises
:class:`ConfigError` with a message naming the key. The resolved config is written into every run directory.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DEFAULT_RECIPE = RECIPES_DIR / "cpu-smollm2.toml"
"""What ``azr train`` and ``azr seed`` run without ``--config``: the CPU SmolLM2 recipe (``azr train --help-config``
prints its values). The dataclass defaults below are not a run anyone makes: they are the paper's algorithm
(TRR++, PPO-clip, lr 1e-6, temperature 1.0, 8 Monte-Carlo solves) at a scale a test affords (B = 4 prompts per
group instead of 64, 16 seed tasks instead of 256, 10 steps), the base every TOML file and override applies to.
``configs/paper-7b.toml`` spells out the paper's full settings."""


class ConfigError(ValueError):
    """A config file or override is invalid. The message names the offending key."""


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelConfig:
    name: str = _f(
        "smollm2-135m", "Model: a built-in alias (see `azr models list`), a local directory or a hub id."
    )
    lora: bool = _f(False, "Train a LoRA adapter instead of all weights.")
    lora_rank: int = _f(16, "LoRA rank when lora = true.")
    lora_alpha: int = _f(32, "LoRA alpha when lora = true.")
    gradient_checkpointing: bool = _f(
        False,
        "Recompute activations in the backward pass to save memory (layer by layer, keeping shared prefixes).",
    )
    dtype: str = _f(
        "fp32",
        "Weights in memory: fp32 (trainable master weights; bf16 autocast still computes in bf16), bf16 (half "
        "the memory; with full fine-tuning AdamW steps far below bf16's precision are lost), or auto (bf16 for "
        "the frozen base of a LoRA run on a device with native bf16, else fp32).",
    )


@dataclass(frozen=True)
class RolloutConfig:
    backend: str = _f("hf", "Generation backend: hf (transformers; CPU or one GPU), vllm, scripted (tests).")
    temperature: float = _f(1.0, "Sampling temperature of every reply (paper: 1.0).")
    top_p: float = _f(1.0, "Nucleus sampling threshold.")
    max_new_tokens_propose: int = _f(384, "Token budget of a proposal reply.")
    max_new_tokens_solve: int = _f(256, "Token budget of a solver reply.")
    max_prompt_tokens: int = _f(1536, "Prompts longer than this are rebuilt with fewer reference tasks.")
    generation_batch_size: int = _f(16, "Sequences decoded together in one forward pass (hf backend).")
    bf16: bool = _f(True, "Decode in bfloat16 where the device supports it (hf backend).")
    num_threads: int = _f(0, "CPU threads for decoding (hf backend); 0 keeps torch's default.")
    share_prefix: bool = _f(
        True, "Prefill a prompt prefix shared by several prompts once (hf: exact; vllm: its prefix cache)."
    )
    vllm_gpu_memory_utilization: float = _f(0.5, "Fraction of GPU memory vLLM may take (vllm backend).")


@dataclass(frozen=True)
class SelfPlayConfig:
    batch_size: int = _f(4, "B: prompts per (task type x role) group per step (paper: 64).")
    n_references: int = _f(6, "K: reference tasks in a deduction/abduction proposal prompt (paper: 6).")
    n_shots: int = _f(
        0, "Worked demonstrations from the buffer before each prompt (0 = paper; helps small models)."
    )
    demo_trace: int = _f(
        0,
        "Beyond the paper (0 = off): deduction and abduction solve demonstrations show, in their <think>, a trace "
        "of the program's run written by the sandbox, at most this many lines (the variables that change, then "
        "the returned value); needs n_shots > 0.",
    )
    min_program_nodes: int = _f(
        0,
        "Beyond the paper (0 = off): deduction and abduction proposals whose f has fewer syntax nodes than this "
        "are rejected as trivial (`return x + 1` has 6), so the proposer is not rewarded for one-liners; with "
        "the check on, an f that never reads its arguments (a constant) is rejected too. Seed tasks are exempt.",
    )
    reject_copy_tasks: bool = _f(
        False,
        "Beyond the paper: deduction and abduction proposals whose f returns the input (or an argument) unchanged are "
        "rejected, so no solver is rewarded for copying the prompt (docs/results.md). Seed tasks are exempt.",
    )
    n_mc_rollouts: int = _f(
        8, "n: Monte-Carlo solves per valid proposal for the learnability reward (paper: 8)."
    )
    n_seed_tasks: int = _f(16, "Seed tasks to gather before RL starts (paper: 256).")
    seed_tasks_file: str = _f(
        "",
        "Optional JSONL of seed tasks in the reference's format; empty = identity triplet. A relative path "
        "missing from the working directory is looked up in azr/recipes/ (the shipped warm-start file).",
    )
    induction_inputs: int = _f(10, "Inputs an induction proposal must give (paper: 10).")
    induction_min_valid: int = _f(10, "Distinct valid inputs an induction proposal needs to be accepted.")
    induction_visible: int = _f(
        5, "Input/output pairs shown to the induction solver; the rest are hidden tests."
    )
    reference_sampling: str = _f("uniform", "How reference tasks are drawn: uniform or recency.")
    buffer_cap: int = _f(
        0,
        "Maximum live tasks per type (0 = unbounded, the paper): after each addition the oldest (by step, then "
        "id; seed tasks too) are evicted, kept on disk so a resume can restore them. 0 or >= n_seed_tasks.",
    )
    max_seeding_rounds: int = _f(50, "Give up seeding after this many proposal rounds.")


@dataclass(frozen=True)
class AlgorithmConfig:
    advantage: str = _f(
        "trr++", "Advantage estimator: trr++ (per-sequence, paper) or trr++-token (reference)."
    )
    reward: str = _f("paper", "Reward composite: paper, or reference (an unlearnable proposal scores -0.5).")
    wrong_penalty: float = _f(-0.5, "Reward of a well-formatted but wrong answer.")
    format_penalty: float = _f(-1.0, "Reward of a reply whose format fails.")
    clip_eps: float = _f(0.2, "PPO clip range (lower side).")
    clip_eps_high: float = _f(0.0, "PPO clip range on the upper side; 0 = same as clip_eps.")
    entropy_coef: float = _f(0.001, "Entropy bonus coefficient (paper: 0.001).")
    kl_coef: float = _f(
        0.0,
        "KL penalty (k3) to the initial model (paper: 0, no reference model). LoRA: the base model with the "
        "adapter off; full fine-tuning: a frozen copy of the initial weights (one more model in memory).",
    )
    ppo_mini_batches: int = _f(
        1,
        "Optimizer steps per batch per epoch: the batch is split (strided) into this many PPO mini-batches. "
        "Paper: 1 (one update per batch); the reference (veRL) uses 3 (384 sequences, ppo_mini_batch_size=128).",
    )
    ppo_epochs: int = _f(1, "Passes over the batch's mini-batches (paper and reference: 1).")
    solve_nll_coef: float = _f(
        0.0,
        "Beyond the paper (0 = off): the correct Monte-Carlo solves of learnable new tasks (some but not all of "
        "their n solves correct, as checked by the executor) join the update as solver replies with this fixed "
        "advantage: on the first optimizer step, exactly this coefficient times the gradient of their "
        "log-likelihood. No human data; outside TRR++'s groups.",
    )
    trace_nll_coef: float = _f(
        0.0,
        "Beyond the paper (0 = off): each new valid deduction and abduction task whose Monte-Carlo solves were not "
        "all correct also joins the update with a solve reply the sandbox wrote (its <think> traces the call, at "
        "most selfplay.demo_trace lines; its answer is the gold one), with this fixed advantage, scored at "
        "temperature 1. No human data; outside TRR++'s groups. Needs selfplay.demo_trace > 0.",
    )
    policy_gradient: bool = _f(
        True,
        "Ablation switch (paper: true). false zeroes the RL loss of proposer and solver: every TRR++ sample's "
        "advantage is set to 0 after the rewards are computed (rewards and reward metrics are unchanged; the "
        "advantage metrics show the zeros), so "
        "only the likelihood terms (solve_nll_coef, trace_nll_coef) move the model. The zero-advantage replies "
        "stay in the batch, so the likelihood terms keep the weight they have in the token-mean of the default "
        "run, and the entropy bonus applies as usual. Needs solve_nll_coef or trace_nll_coef > 0.",
    )
    std_eps: float = _f(1e-6, "Added to the group std before dividing.")


@dataclass(frozen=True)
class ExecutorConfig:
    workers: int = _f(2, "Sandbox worker processes (fork servers).")
    timeout_s: float = _f(5.0, "Wall-clock limit of one program run.")
    memory_mb: int = _f(512, "Address-space limit of one program run.")
    max_output_chars: int = _f(10_000, "Results whose repr is longer are rejected (never truncated).")
    max_program_chars: int = _f(4_000, "Longest accepted program.")
    max_input_chars: int = _f(1_000, "Longest accepted input text.")
    determinism_runs: int = _f(2, "Separate processes a proposal runs in; all results must agree.")
    min_tier: str = _f("none", "Refuse to run below this sandbox tier: none, rlimits, seccomp or bwrap.")


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = _f(10, "Self-play steps to reach.")
    seed: int = _f(0, "RNG seed for Python, NumPy and torch.")
    lr: float = _f(1e-6, "AdamW learning rate, constant (paper: 1e-6).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    grad_clip: float = _f(1.0, "Gradient norm clip.")
    micro_batch_size: int = _f(4, "Sequences per forward/backward pass; gradients accumulate over the batch.")
    micro_batch_tokens: int = _f(
        0,
        "With share_prefix: members of one shared-prefix group beyond micro_batch_size join the same micro-batch "
        "while its padded tokens after the prefix (rows x longest member) stay within this many, so the prefix runs "
        "once (0: micro_batch_size alone cuts).",
    )
    share_prefix: bool = _f(
        True, "Run a prompt prefix shared by a micro-batch once and attend all members to it (exact)."
    )
    bf16_autocast: bool | str = _f(
        "auto",
        "bfloat16 autocast for forward/backward: auto (where bf16 is native: CUDA, CPUs with AMX or "
        "AVX512-BF16), true or false.",
    )
    save_every: int = _f(5, "Save a checkpoint every this many steps (and at the end).")
    keep_last: int = _f(2, "Checkpoints kept in the run directory.")
    device: str = _f("auto", "auto, cpu or cuda.")
    fsdp: bool = _f(
        False,
        "With several processes, shard parameters, gradients and AdamW state over them with FSDP2 (each keeps "
        "1/W) instead of holding whole copies (data parallel); full fine-tuning only, kl_coef = 0.",
    )


@dataclass(frozen=True)
class LoggingConfig:
    tensorboard: bool = _f(False, "Also write TensorBoard events (needs the tensorboard extra).")
    wandb: bool = _f(False, "Also log to Weights & Biases (needs the wandb extra).")
    wandb_project: str = _f("azr", "W&B project name.")
    progress: bool = _f(True, "Show progress bars.")
    sample_every: int = _f(5, "Print a table of sample completions every this many steps (0 = never).")
    eval_every: int = _f(0, "Run a small held-out check every this many steps (0 = never).")
    eval_limit: int = _f(20, "Items per benchmark (probe: per task type) in an in-training evaluation.")
    eval_benches: str = _f(
        "probe,cruxeval-o,cruxeval-i", "Comma-separated benchmarks of the in-training evaluation."
    )
    eval_shots: int = _f(2, "Fixed worked demonstrations before each in-training evaluation item.")
    eval_data_dir: str = _f("", "Local benchmark directory for in-training evaluation; empty = hub.")


@dataclass(frozen=True)
class SafetyConfig:
    detector: str = _f(
        "lexicon",
        "Safety monitor on every rollout's reasoning and answer (azr.safety): lexicon (the documented phrase "
        "patterns), off, or module:callable returning an object with flag(text) -> list[Flag].",
    )
    zero_reward: bool = _f(
        False, "Give a rollout the detector flagged reward 0 before the advantages (off: only logged)."
    )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)  # section name -> its dataclass, in order


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
