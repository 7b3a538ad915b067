"""Run metrics: the documented metric namespace, the JSONL log and optional TensorBoard / W&B sinks.

What it covers:

- :data:`METRICS`, every metric name the loop emits with a one-line description (``docs/metrics.md`` is checked
  against it by a test). Per-group and per-type names are templates: ``<type>`` is ``deduction``, ``abduction``
  or ``induction``; ``<role>`` is ``propose`` or ``solve``.
- :class:`MetricsLogger`, which always appends one JSON object per :meth:`~MetricsLogger.log` call to
  ``run_dir/metrics.jsonl`` (flushed and fsynced per line, so a crash loses at most the line being written) and,
  when enabled, mirrors numbers to TensorBoard and W&B. Those two are imported lazily; a sink that fails at run
  time (network, disk) is disabled with one warning and the loop goes on.
- :func:`read_metrics` / :func:`rewind_metrics` for readers and for resuming after a crash.
- :func:`format_step_line` (the one console line per step) and :func:`sample_table` (a few completions).

Not covered: aggregation (the loop computes the means) and plotting (see :mod:`azr.report.run`).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from azr.errors import AzrError
from azr.fsutil import atomic_write_text
from azr.types import ROLES, TASK_TYPES

if TYPE_CHECKING:
    from rich.table import Table

    from azr.config import LoggingConfig

METRICS_FILE = "metrics.jsonl"
WANDB_ID_FILE = "wandb_id.txt"
RESERVED = ("step", "time")
"""Fields every row carries besides the metrics: the step and the wall-clock time (Unix seconds) it was logged."""

METRICS: dict[str, str] = {
    "reward/<type>/<role>": "Mean reward of the group's sequences (before advantage normalisation).",
    "reward_std/<type>/<role>": "Standard deviation (Bessel-corrected) of the group's rewards: the scale TRR++ divides by.",
    "advantage_std/<type>/<role>": "Standard deviation of the group's advantages (close to 1 after TRR++ by construction, 0 for a constant group).",
    "count/<type>/<role>": "Sequences of the group in this step's policy update (replies the parser raised on are left out).",
    "propose/valid_rate/<type>": "Fraction of proposals that became valid tasks (ran, deterministic, checks passed).",
    "propose/format_rate/<type>": "Fraction of proposals whose reply parsed (well formatted), parser errors left out.",
    "propose/parser_error_rate/<type>": "Fraction of proposals the parser raised on: an azr bug, not a format failure; those replies get no reward and no update.",
    "propose/learnability/<type>": "Mean learnability reward (1 - Monte-Carlo solve rate) of valid proposals.",
    "solve/accuracy/<type>": "Fraction of solver answers that were correct.",
    "solve/format_rate/<type>": "Fraction of solver replies whose answer parsed, parser errors left out.",
    "solve/parser_error_rate/<type>": "Fraction of solver replies the parser raised on: an azr bug, not a format failure; those replies get no reward and no update.",
    "solve/likelihood_count/<type>": "With `algorithm.solve_nll_coef > 0` only: correct Monte-Carlo solves of learnable new tasks that joined the update through the likelihood term (not counted in the other solve metrics).",
    "solve/trace_count/<type>": "With `algorithm.trace_nll_coef > 0` only: sandbox-written solve replies (a trace of the call, then the gold answer) of new deduction/abduction tasks not always solved, that joined the update (not counted in the other solve metrics).",
    "propose/copy_task_rate/<type>": "Deduction and abduction only: fraction of valid proposals whose output is their input or one of its arguments (a copy of the prompt answers them; `selfplay.reject_copy_tasks` rejects them).",
    "solve/copy_rate/<type>": "Deduction and abduction only: fraction of parsed solver answers that copy what the prompt shows (the input or one of its arguments as the output, the output as the input or one of its arguments), right or wrong: the shortcut docs/results.md measures on CRUXEval.",
    "solve/copy_task_rate/<type>": "Deduction and abduction only: fraction of the tasks solved this step whose output is their input or one of its arguments.",
    "solve/copy_proof_accuracy/<type>": "Deduction and abduction only: solver accuracy on the tasks whose output is not their input or one of its arguments, where copying the prompt cannot be right (the in-loop view of the copy-proof rows in docs/results.md).",
    "buffer/size/<type>": "Live tasks in the type's buffer after this step's additions (and evictions, with selfplay.buffer_cap).",
    "train/loss": "Policy loss of the update (PPO-clip, token mean, with entropy and KL terms); mean over the optimizer steps.",
    "train/grad_norm": "Gradient norm before clipping; mean over the optimizer steps.",
    "train/clip_frac": "Fraction of tokens whose probability ratio was clipped; mean over the optimizer steps (0 with one step per batch).",
    "train/entropy": "Mean token entropy of the policy, at the sampling temperature, on the update batch; absent unless entropy_coef > 0.",
    "train/kl": "Token mean of the k3 estimate of the KL divergence of the policy from the initial policy, before each optimizer step (when kl_coef > 0).",
    "train/lr": "Learning rate used for the update.",
    "train/tokens": "Completion tokens in the update batch.",
    "train/sequences": "Sequences in the update batch.",
    "train/optimizer_steps": "Optimizer steps applied: ppo_epochs x ppo_mini_batches, less any skipped.",
    "train/pg_loss": "Policy-gradient part of the loss; mean over the optimizer steps.",
    "train/approx_kl": "Token mean of old minus new log-prob; mean over the optimizer steps (0 with one step per batch).",
    "train/skipped": "Fraction of the optimizer steps skipped because the gradient was not finite.",
    "train/padding_frac": "Share of the decoder positions the update computed that were padding.",
    "train/shared_frac": "Share of the batch's tokens not recomputed because their prompt prefix was shared.",
    "train/seconds": "Wall time of the update, no-grad log-prob passes included.",
    "train/logprob_seconds": "Wall time of the no-grad passes before the first optimizer step: old log-probs (several optimizer steps) and reference log-probs (kl_coef > 0); 0 when neither is needed.",
    "train/work_tokens": "Positions one forward pass over the update batch must compute, a shared prefix once (azr.flops).",
    "train/work_context": "Attention context summed over those positions (azr.flops).",
    "train/work_logits": "Positions whose logits one pass over the update batch needs: the reply tokens.",
    "train/tokens_per_s": "(prompt + reply) tokens trained on per second, over all epochs; a shared prefix counts for every member.",
    "perf/tokens_per_s": "Generated tokens per second over the step's generation phase.",
    "perf/seconds/generate": "Seconds spent generating proposals and solves.",
    "perf/seconds/prefill": "Seconds of the generation phase spent prefilling prompts (hf backend; 0 where the backend does not say); the rest of it is decoding.",
    "perf/work/prefill_tokens": "Prompt positions the step's generation must prefill: distinct prompts, a prefix shared by a group once (azr.flops).",
    "perf/work/prefill_context": "Attention context summed over those positions (azr.flops).",
    "perf/work/prefill_logits": "Positions whose logits the prefill needs: one per distinct prompt.",
    "perf/work/decode_tokens": "Decoding steps the step's generation must run: every generated token but each reply's first.",
    "perf/work/decode_context": "Attention context summed over those decoding steps (azr.flops).",
    "perf/seconds/execute": "Seconds spent running programs in the sandbox (validation and checks).",
    "perf/seconds/update": "Seconds spent in the policy update (forward, backward, optimizer).",
    "perf/seconds/store": "Seconds spent writing tasks and rollouts to the store.",
    "perf/seconds/step": "Wall-clock seconds of the whole step.",
    "perf/memory/rss_gib": "Resident memory of the training process at the end of the step, GiB (Linux /proc; rank 0's).",
    "perf/memory/peak_gib": "Peak resident memory of the training process since it started (VmHWM), GiB.",
    "perf/memory/workers_gib": "Resident memory of the processes below the training process (sandbox workers), GiB.",
    "perf/processes": "Processes below the training process at the end of the step (sandbox workers and their jobs): constant in a healthy run.",
    "dist/world_size": "Training processes of the run (1 without a launcher). With more, the rewards, advantages, counts and update metrics are over every process's samples; perf/* timings are rank 0's.",
    "safety/flag_rate/<role>": "Fraction of the role's logged replies (proposals, real solves) whose reasoning or answer the safety detector flagged (safety.detector; absent when off).",
    "safety/flagged_auxiliary": "Replies of the auxiliary likelihood terms (correct Monte-Carlo solves, solve_nll_coef; sandbox-written solves, trace_nll_coef) that the safety detector flagged; with safety.zero_reward they leave the update.",
    "safety/flags/deceive_overseers": "Detector flags of intent to deceive or outsmart overseers, graders or users in this step's replies.",
    "safety/flags/escape_sandbox": "Detector flags of intent to escape, bypass or disable the sandbox or the monitor.",
    "safety/flags/self_exfiltration": "Detector flags of intent to copy, upload or exfiltrate the model itself or its weights.",
    "safety/flags/harm_people": "Detector flags of intent to harm people.",
    "safety/sandbox/static_reject": "Proposals the sandbox's static check refused (a banned import or call).",
    "safety/sandbox/timeout": "Proposals whose program ran over the wall-clock or CPU-time limit.",
    "safety/sandbox/memory": "Proposals whose program ran over the address-space limit.",
    "safety/sandbox/denied_syscall": "Proposals whose program raised PermissionError, what a syscall denied by the seccomp filter raises.",
    "eval/cruxeval-o": "CRUXEval-O accuracy (predict the output) of the in-training evaluation.",
    "eval/cruxeval-i": "CRUXEval-I accuracy (predict an input) of the in-training evaluation.",
    "eval/probe": "Held-out probe accuracy (self-play tasks of all three types, training prompts and scorers).",
    "eval/probe/<type>": "Held-out probe accuracy on the tasks of one type.",
}

_PLACEHOLDERS = {"<type>": [t.value for t in TASK_TYPES], "<role>": [r.value for r in ROLES]}


def expand(template: str) -> list[str]:
    """Concrete names of a template: ``expand("solve/accuracy/<type>")`` gives the three per-type names."""
    names = [template]
    for placeholder, values in _PLACEHOLDERS.items():
        names = (
            [n.replace(placeholder, v) for n in names for v in values] if placeholder in template else names
        )
    return names


def describe(name: str) -> str | None:
    """Description of a concrete metric name (``"reward/deduction/propose"``), or None if it is not documented."""
    for template, text in METRICS.items():
        if name in expand(template):
            return text
    return None


# ---------------------------------------------------------------------------------------------- JSONL log


def _clean(value: Any) -> float | int | str | None:
    """A JSON-safe scalar: tensors/NumPy scalars become Python numbers, NaN and inf become null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int | float | str):
        return value
    return str(value)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``run_dir/metrics.jsonl`` in file order; [] if absent. A torn final line is skipped silently,
    any other unreadable line with a warning. Several rows may share a step (see :func:`merge_steps`)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1 :]):
                warnings.warn(f"{path}:{i + 1}: skipping an unreadable line", RuntimeWarning, stacklevel=2)
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def merge_steps(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per step, sorted by step; later rows of the same step override earlier keys."""
    merged: dict[int, dict[str, Any]] = {}
    for row in rows:
        merged.setdefault(row["step"], {}).update(row)
    return [merged[s] for s in sorted(merged)]


def rewind_metrics(run_dir: str | Path, step: int) -> int:
    """Keep only rows with ``step <= step`` (atomic rewrite); returns the rows dropped. Call on resume from the
    checkpoint of ``step`` so no step is logged twice."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return 0
    rows = read_metrics(run_dir)
    kept = [r for r in rows if r["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    return len(rows) - len(kept)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that has no newline (a write the crash interrupted) so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------- sinks


class Sink(Protocol):
    """A mirror of the numeric metrics. ``log`` may raise; the logger then disables the sink."""

    name: str

    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Scalars into ``run_dir/tensorboard`` through torch's ``SummaryWriter``."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        try:
            import tensorboard  # noqa: F401  (torch's import error does not name the extra)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AzrError(
                "logging.tensorboard = true needs the tensorboard extra: pip install 'azr[tensorboard]'"
            ) from None
        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink:
    """Weights & Biases run, resumed across restarts through the id kept in ``run_dir/wandb_id.txt``."""

    name = "wandb"

    def __init__(self, run_dir: Path, project: str, run_name: str, config_dict: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise AzrError("logging.wandb = true needs the wandb extra: pip install 'azr[wandb]'") from None
        self._wandb = wandb
        self._run = wandb.init(
            project=project,
            name=run_name,
            config=config_dict,
            resume="allow",
            id=wandb_run_id(run_dir),
            dir=str(run_dir),
        )

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


def wandb_run_id(run_dir: Path) -> str:
    """The W&B run id of ``run_dir``, created once and stored in ``wandb_id.txt`` so a resume continues the run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    atomic_write_text(path, run_id + "\n")
    return run_id


# ---------------------------------------------------------------------------------------------- logger


class MetricsLogger:
    """Writes each step's metrics to ``metrics.jsonl`` and the enabled sinks.

    >>> with MetricsLogger(run_dir, cfg.logging, "run-1", config.to_dict(cfg)) as logger:
    ...     logger.log(1, {"reward/deduction/solve": 0.25, "perf/seconds/step": 74.2})

    A sink whose package is missing raises :class:`AzrError` here (the user asked for it); a sink that fails
    later, or fails to connect, is disabled with one ``RuntimeWarning``. The JSONL file never is.
    """

    def __init__(
        self, run_dir: str | Path, cfg: LoggingConfig, run_name: str, config_dict: dict[str, Any]
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        _drop_torn_tail(self.path)
        previous = read_metrics(self.run_dir)
        resume_step = max(r["step"] for r in previous) + 1 if previous else None
        self.sinks: list[Sink] = []
        if cfg.tensorboard:
            self._add_sink(lambda: TensorBoardSink(self.run_dir / "tensorboard", purge_step=resume_step))
        if cfg.wandb:
            self._add_sink(lambda: WandbSink(self.run_dir, cfg.wandb_project, run_name, config_dict))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (closed in close())

    def _add_sink(self, make: Callable[[], Sink]) -> None:
        try:
            self.sinks.append(make())
        except AzrError:
            raise
        except Exception as e:
            warnings.warn(f"metrics: could not start a sink, going on without it: {e!r}", RuntimeWarning, 3)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Append one row ``{"step": step, "time": now, **metrics}`` and mirror the numbers to the sinks."""
        row: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in metrics.items() if k not in RESERVED})
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        scalars = {k: float(v) for k, v in row.items() if k not in RESERVED and isinstance(v, int | float)}
        for sink in list(self.sinks):
            try:
                sink.log(int(step), scalars)
            except Exception as e:
                self._disable(sink, e)

    def _disable(self, sink: Sink, error: Exception) -> None:
        self.sinks.remove(sink)
        warnings.warn(
            f"metrics: {sink.name} failed ({error!r}); disabled for the rest of the run", RuntimeWarning, 3
        )
        try:
            sink.close()
        except Exception:
            pass

    def close(self) -> None:
        """Close the file and the sinks (a sink failing to close is ignored)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                warnings.warn(f"metrics: {sink.name} failed to close: {e!r}", RuntimeWarning, 2)
        self.sinks = []
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- console


_ABBREV = {"deduction": "d", "abduction": "a", "induction": "i", "propose": "p", "solve": "s"}


def _mean_of(metrics: Mapping[str, Any], template: str) -> float | None:
    values = [metrics[n] for n in expand(template) if isinstance(metrics.get(n), int | float)]
    return sum(values) / len(values) if values else None


def format_step_line(step: int, total: int, metrics: Mapping[str, Any]) -> str:
    """The one console line of a step; parts whose metrics are missing are left out.

    ``step 3/10 | R d/p +0.12 d/s -0.50 | valid 0.42 | solve 0.18 | loss 0.031 | 85 tok/s | 74.2 s``
    (``R``: mean reward per group, ``d/a/i`` x ``p/s``; valid/solve: means over task types).
    """
    parts = [f"step {step}/{total}"]
    rewards = []
    for name in expand("reward/<type>/<role>"):
        value = metrics.get(name)
        if isinstance(value, int | float):
            _, t, r = name.split("/")
            rewards.append(f"{_ABBREV[t]}/{_ABBREV[r]} {value:+.2f}")
    if rewards:
        parts.append("R " + " ".join(rewards))
    for label, template in (("valid", "propose/valid_rate/<type>"), ("solve", "solve/accuracy/<type>")):
        mean = _mean_of(metrics, template)
        if mean is not None:
            parts.append(f"{label} {mean:.2f}")
    loss = metrics.get("train/loss")
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.3g}")
    tps = metrics.get("perf/tokens_per_s")
    if isinstance(tps, int | float):
        parts.append(f"{tps:.0f} tok/s")
    seconds = metrics.get("perf/seconds/step")
    if isinstance(seconds, int | float):
        parts.append(f"{seconds:.1f} s")
    return " | ".join(parts)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _clip(text: str, n: int, tail: bool = False) -> str:
    text = _one_line(text)
    if len(text) <= n:
        return text
    return "…" + text[-(n - 1) :] if tail else text[: n - 1] + "…"


def sample_table(rows: Iterable[Mapping[str, Any]], prompt_chars: int = 60, reply_chars: int = 120) -> Table:
    """A rich table of a few completions: group, the prompt's tail, the reply's start and the reward.

    Each row is a mapping with ``prompt``, ``reply``, ``reward`` and either ``group`` or ``type`` and ``role``
    (a rollout-log row works as is). Model text is shown literally (never parsed as rich markup), with
    whitespace runs collapsed to one space.
    """
    from rich.table import Table
    from rich.text import Text

    table = Table(title="sample completions", show_lines=True, expand=False)
    table.add_column("group", no_wrap=True)
    table.add_column("prompt (tail)", max_width=prompt_chars + 2)
    table.add_column("reply (start)", max_width=reply_chars + 2)
    table.add_column("reward", justify="right", no_wrap=True)
    for row in rows:
        group = row.get("group") or f"{row.get('type', '?')}/{row.get('role', '?')}"
        reward = row.get("reward")
        table.add_row(
            Text(str(group)),
            Text(_clip(str(row.get("prompt", "")), prompt_chars, tail=True)),
            Text(_clip(str(row.get("reply", "")), reply_chars)),
            Text(f"{reward:+.2f}" if isinstance(reward, int | float) else "-"),
        )
    return table
