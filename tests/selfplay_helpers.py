"""Helpers shared by the self-play, loop, safety and GPU tests: a scripted model that plays both roles from the
prompt text, a small self-play config, and a task store holding the identity seed."""

from __future__ import annotations

import re

from azr.config import Config, from_dict
from azr.store import TaskStore

B, N_MC = 3, 4


def scripted_reply(prompt: str, counter: list[int]) -> str:
    """Plays both roles from the prompt text: programs ``x + k``, solved correctly every other time."""
    counter[0] += 1
    n = counter[0]
    user = prompt.split("Your job is", 1)[-1]
    if "invent a new Python program" in prompt:
        if n % 5 == 0:
            return "I am not sure."  # a format failure
        return f"<think>add</think><answer>\n```python\ndef f(x):\n    return x + {n}\n```\n```input\n{n}\n```\n</answer>"
    if "rediscover a hidden" in user:
        blocks = "\n".join(f"```input\n{i}\n```" for i in range(10))
        return f"<think>t</think><answer>\n{blocks}\n```message\nadds a constant\n```\n</answer>"
    # With demonstrations (n_shots) the prompt's own task comes last.
    k = next(reversed(list(re.finditer(r"return x \+ (\d+)", prompt))), None)
    right = n % 2 == 0
    if "what this Python program returns" in prompt:
        x = re.findall(r"```input\n(.*?)\n```", prompt)[-1]
        value = (int(x) + int(k.group(1)) + (0 if right else 1)) if k else x
        return f"<think>compute</think><answer>\n```output\n{value}\n```\n</answer>"
    if "Find an input" in prompt:
        out = re.findall(r"```output\n(.*?)\n```", prompt)[-1]
        value = (int(out) - int(k.group(1)) + (0 if right else 1)) if k else out
        return f"<think>invert</think><answer>\n```input\n{value}\n```\n</answer>"
    return "<think>guess</think><answer>\n```python\ndef f(a):\n    return a\n```\n</answer>"


def make_cfg(**sections) -> Config:
    base = {
        "selfplay": {"batch_size": B, "n_mc_rollouts": N_MC, "n_references": 2, "induction_min_valid": 6},
        "rollout": {"max_new_tokens_propose": 512, "max_new_tokens_solve": 256, "max_prompt_tokens": 4096},
        "executor": {"workers": 2},
    }
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return from_dict(base)


def seeded_store(tmp_path, executor) -> TaskStore:
    from azr.tasks.seed_tasks import identity_seed_tasks

    store = TaskStore(tmp_path / "tasks.sqlite")
    store.add_tasks(identity_seed_tasks(executor), 0)
    return store
