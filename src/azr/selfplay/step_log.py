"""What one self-play step leaves behind for people: its row in the rollout log and its metrics.

Both read the step's samples (:class:`azr.selfplay.samples.Sample`) and nothing else of the step; the names follow the
documented metric namespace (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from azr.seams import TaskStoreLike
from azr.tasks.parsing import ParsedSolution
from azr.tasks.validate import echoes_input, is_copy_task
from azr.types import GROUPS, TASK_TYPES, Role, Task, TaskType, group_name

if TYPE_CHECKING:
    from azr.selfplay.samples import Sample

__all__ = ["copy_metrics", "rollout_row", "step_metrics"]


def rollout_row(step: int, s: Sample) -> dict[str, Any]:
    """One row of the store's rollout log."""
    return {
        "step": step,
        "role": s.role.value,
        "type": s.task_type.value,
        "prompt": s.prompt,
        "reply": s.completion.text,
        "parse_status": "ok" if s.format_ok else str(getattr(s.parsed, "reason", "error")),
        "reward": None if s.parser_error else s.reward,
        "advantage": None if s.parser_error else s.advantage,
        "task_id": s.task.id if s.task is not None else None,
        "outcome": _outcome(s),
        "flags": [f.to_json() for f in s.flags],
    }


def _outcome(s: Sample) -> str:
    if s.parser_error:
        return "parser_error"
    if not s.format_ok:
        return "format_error"
    if s.role is Role.SOLVE:
        return "correct" if s.success else "wrong"
    return s.verdict or ("valid" if s.success else "invalid")


def step_metrics(samples: list[Sample], store: TaskStoreLike, timings: dict[str, float]) -> dict[str, float]:
    """Per-group means and rates in the documented metric namespace (docs/metrics.md).

    ``samples`` are all the step's replies; replies the parser crashed on count only in ``parser_error_rate``,
    every other per-group metric is over the replies that enter the update.
    """
    m: dict[str, float] = {}
    for kind, role in GROUPS:
        everyone = [s for s in samples if s.task_type is kind and s.role is role]
        group = [s for s in everyone if not s.parser_error]
        name = group_name(kind, role)
        prefix = "propose" if role is Role.PROPOSE else "solve"
        m[f"count/{name}"] = len(group)
        if everyone:
            m[f"{prefix}/parser_error_rate/{kind.value}"] = 1.0 - len(group) / len(everyone)
        if not group:
            continue
        rewards = torch.tensor([s.reward for s in group], dtype=torch.float64)  # (n,)
        m[f"reward/{name}"] = float(rewards.mean())
        m[f"reward_std/{name}"] = float(rewards.std()) if len(group) > 1 else 0.0  # Bessel, as TRR++
        m[f"advantage_std/{name}"] = float(torch.tensor([s.advantage for s in group]).std(unbiased=False))
        m[f"{prefix}/format_rate/{kind.value}"] = _mean([float(s.format_ok) for s in group])
        key = "valid_rate" if role is Role.PROPOSE else "accuracy"
        m[f"{prefix}/{key}/{kind.value}"] = _mean([float(s.success) for s in group])
        if role is Role.PROPOSE:
            valid = [s.role_reward for s in group if s.success]
            if valid:
                m[f"propose/learnability/{kind.value}"] = _mean(valid)
    m.update(copy_metrics(samples))
    for kind in TASK_TYPES:
        m[f"buffer/size/{kind.value}"] = store.count(kind)
    for phase in ("generate", "prefill", "execute", "store"):
        m[f"perf/seconds/{phase}"] = timings.get(phase, 0.0)
    m.update({f"perf/{k}": float(v) for k, v in timings.items() if k.startswith("work/")})
    if timings.get("generate"):
        m["perf/tokens_per_s"] = timings.get("tokens", 0) / timings["generate"]
    return m


def copy_metrics(samples: Sequence[Sample]) -> dict[str, float]:
    """The copy shortcut as it forms in training, for deduction and abduction: the share of solver answers that copy
    what the prompt shows (the input as the output, the output as the input), of the solved tasks whose output is
    their input, and of the valid proposals that are such copy tasks, and the solver's accuracy on the other tasks
    (docs/metrics.md)."""
    m: dict[str, float] = {}
    for kind in (TaskType.DEDUCTION, TaskType.ABDUCTION):
        solves = [s for s in samples if s.group == (kind, Role.SOLVE) and not s.parser_error and s.task]
        answers = [(s.parsed.answer, s.valid_task) for s in solves if isinstance(s.parsed, ParsedSolution)]
        if answers:
            m[f"solve/copy_rate/{kind.value}"] = _mean([float(_copies(kind, a, t)) for a, t in answers])
        if solves:
            m[f"solve/copy_task_rate/{kind.value}"] = _mean(
                [float(is_copy_task(s.valid_task)) for s in solves]
            )
        if proof := [s for s in solves if not is_copy_task(s.valid_task)]:
            m[f"solve/copy_proof_accuracy/{kind.value}"] = _mean([float(s.success) for s in proof])
        valid = [s.valid_task for s in samples if s.group == (kind, Role.PROPOSE) and s.success and s.task]
        if valid:
            m[f"propose/copy_task_rate/{kind.value}"] = _mean([float(is_copy_task(t)) for t in valid])
    return m


def _copies(kind: TaskType, answer: str, task: Task) -> bool:
    """Deduction: the answer echoes the shown input; abduction: the answer's arguments are built on the output."""
    if kind is TaskType.DEDUCTION:
        return echoes_input(task.inputs[0], answer)
    return echoes_input(answer, task.outputs[0])


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0
