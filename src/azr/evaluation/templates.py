"""Plain prompt templates for the non-CRUXEval benchmarks, and how code is read back from a reply.

CRUXEval uses the training prompts (:func:`azr.tasks.prompts.build_prompt`, R1-style ``<think>``/``<answer>``), so
validation scores measure the same skill the model trains on. The other benchmarks use these templates, one user
message each, rendered with the tokenizer's chat template when it has one:

- HumanEval+: "Complete the following Python function ..." + the prompt in a ``python`` fence; the reply's first
  ``python`` fence (or the whole reply) is the program, with the prompt prepended if it does not define the
  function itself, and the prompt's import lines prepended in any case.
- MBPP+: the task text with its example assertion, asking for a ``python`` fence with the function.
- Math: the problem, asking for step-by-step reasoning and the final answer in ``\\boxed{}``.

With ``shots`` (HumanEval+/MBPP+), worked demonstrations come first as earlier user/assistant turns: the same
message template applied to a demonstration problem, answered by its solution in a ``python`` fence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

CODE_SYSTEM = "You are a careful Python programmer."
MATH_SYSTEM = "You are a careful mathematician."

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[^\n]*\n(.*?)(?:```|\Z)", re.S)


def humaneval_message(prompt: str) -> str:
    return (
        "Complete the following Python function. Reply with the whole function, including its signature, "
        f"in one ```python code block.\n\n```python\n{prompt.strip()}\n```"
    )


def mbpp_message(prompt: str, entry: str) -> str:
    task = prompt.strip().strip('"').strip()
    return (
        f"{task}\n\nWrite a Python function named {entry} that solves this task and passes the test above. "
        "Reply with the code in one ```python code block."
    )


def math_message(problem: str) -> str:
    return f"{problem.strip()}\n\nReason step by step, then put the final answer inside \\boxed{{}}."


def render(system: str, user: str, tokenizer: Any, shots: Sequence[tuple[str, str]] = ()) -> str:
    """One chat-formatted prompt (plain text when the tokenizer has no chat template); ``shots`` are worked
    demonstrations, (user, assistant) turns placed between the system message and the question."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}]
        for question, answer in shots:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    demos = "".join(f"{question}\n\n{answer}\n\n" for question, answer in shots)
    return f"{system}\n\n{demos}{user}\n\n"


def extract_code(reply: str) -> str:
    """The first fenced python block of a reply (an unclosed fence runs to the end), else the whole reply."""
    match = _FENCE.search(reply)
    return (match.group(1) if match else reply).strip("\n")


def humaneval_program(prompt: str, entry: str, reply: str) -> str:
    """A runnable program from a HumanEval reply: the prompt's imports, and the prompt itself if the reply only
    gives the body of the function."""
    code = extract_code(reply)
    if not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, flags=re.M):
        return prompt + code
    # top-level imports only: docstrings hold lines that start with "from"
    header = prompt.split("\ndef ", 1)[0]
    imports = [ln for ln in header.splitlines() if re.match(r"(import|from)\s+\w", ln)]
    return "\n".join([*imports, code]) if imports else code
