"""The run configuration's schema: one frozen dataclass per concern, each field with its default and help text.

:class:`Config` groups the sections; :mod:`azr.config` loads, overrides, validates and writes them (and
re-exports every name here, so ``from azr.config import Config`` is the way to reach them).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any


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
    eval_demo_think: str = _f(
        "sentence", "<think> of those demonstrations: sentence, or trace (the form demo_trace trains on)."
    )
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
