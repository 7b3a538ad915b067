"""Golden tests of the six prompts (chat-templated and plain) and of the token-budget rebuild.

Regenerate the golden files after an intended wording change with ``AZR_UPDATE_GOLDEN=1 pytest tests/test_prompts.py``
and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from azr.tasks.parsing import ParsedProposal, parse_proposal
from azr.tasks.prompts import SYSTEM_PROMPT, build_prompt, count_tokens, split_induction
from azr.types import GROUPS, Role, Task, TaskType

GOLDEN = Path(__file__).parent / "golden"
D, A, IND = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION

REFS = [
    Task(D, "def f(a):\n    return a", ('"Hello world"',), ("'Hello world'",), origin="seed"),
    Task(D, "def f(xs):\n    return [x * 2 for x in xs if x % 2]", ("[1, 2, 3]",), ("[2, 6]",)),
    Task(D, "def f(s, n):\n    return s[-n:] + s[:-n]", ("'rotate', 2",), ("'terota'",)),
]
IND_TASK = Task(
    IND,
    "def f(s):\n    return sum(c in 'aeiou' for c in s)",
    tuple(f"'{w}'" for w in ["apple", "sky", "queue", "", "banana", "rhythm", "aeiou"]),
    ("2", "0", "4", "0", "3", "0", "5"),
    "Counts something about the letters of a word.",
)


def _cases():
    return {
        (D, Role.PROPOSE): {"references": REFS},
        (A, Role.PROPOSE): {"references": REFS},
        (IND, Role.PROPOSE): {"references": REFS[1:2], "n_inputs": 10},
        (D, Role.SOLVE): {"task": REFS[1]},
        (A, Role.SOLVE): {"task": REFS[2]},
        (IND, Role.SOLVE): {"task": IND_TASK, "n_visible": 5},
    }


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("AZR_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with AZR_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"prompt differs from {path}"


@pytest.mark.parametrize(("kind", "role"), GROUPS)
def test_chat_prompt_golden(tiny, kind, role):
    _, tok = tiny
    prompt = build_prompt(kind, role, tokenizer=tok, **_cases()[(kind, role)])
    assert prompt.startswith("<|im_start|>system\n" + SYSTEM_PROMPT)
    assert prompt.endswith("<|im_start|>assistant\n")
    _golden(f"prompt_{kind.value}_{role.value}.chat.txt", prompt)


@pytest.mark.parametrize(("kind", "role"), GROUPS)
def test_plain_prompt_golden(kind, role):
    prompt = build_prompt(kind, role, **_cases()[(kind, role)])
    assert prompt.startswith(SYSTEM_PROMPT) and "<|im_start|>" not in prompt
    _golden(f"prompt_{kind.value}_{role.value}.plain.txt", prompt)


@pytest.mark.parametrize(("kind", "role"), GROUPS)
def test_instructions_hold_no_example_values(kind, role):
    """Small models copy concrete values from instructions, so only task data may carry digits or literals."""
    empty = Task(kind, "", ("",), ("",), "")
    kwargs = {"references": [empty]} if kind is IND and role is Role.PROPOSE else {"task": empty}
    prompt = build_prompt(kind, role, n_inputs=10, **(kwargs if role is Role.SOLVE or kind is IND else {}))
    digits = re.findall(r"\d+", re.sub(r"(Case|Example) \d+:", "", prompt))
    assert digits in ([], ["10"]), digits  # only the requested count of inputs
    assert "'" not in prompt.replace("'s ", "") and '"' not in prompt


def test_every_prompt_asks_for_the_reply_format():
    for kind, role in GROUPS:
        prompt = build_prompt(kind, role, **_cases()[(kind, role)])
        assert "<think>" in prompt and "<answer>" in prompt and "</answer>" in prompt


def test_induction_solve_shows_visible_pairs_and_message_only():
    prompt = build_prompt(IND, Role.SOLVE, task=IND_TASK, n_visible=5)
    visible, hidden = split_induction(IND_TASK, 5)
    assert [p[0] for p in visible] == list(IND_TASK.inputs[:5]) and len(hidden) == 2
    for inp, _ in visible:
        assert f"```input\n{inp}\n```" in prompt
    for inp, _ in hidden:
        assert f"```input\n{inp}\n```" not in prompt
    assert IND_TASK.message in prompt and IND_TASK.program not in prompt


def test_split_induction_keeps_one_hidden_pair():
    six = Task(IND, "p", tuple("123456"), tuple("123456"), "m")
    assert [len(x) for x in split_induction(six, 5)] == [5, 1]
    assert [len(x) for x in split_induction(six, 10)] == [5, 1]
    one = Task(IND, "p", ("1",), ("1",), "m")
    assert [len(x) for x in split_induction(one, 5)] == [1, 0]


def test_over_budget_prompt_drops_references(tiny):
    _, tok = tiny
    full = build_prompt(D, Role.PROPOSE, tokenizer=tok, references=REFS)
    n_full = count_tokens(full, tok)
    shorter = build_prompt(D, Role.PROPOSE, tokenizer=tok, references=REFS, max_tokens=n_full - 1)
    assert count_tokens(shorter, tok) <= n_full - 1
    assert REFS[0].program in shorter and REFS[2].program not in shorter
    none = build_prompt(D, Role.PROPOSE, tokenizer=tok, references=REFS, max_tokens=1)
    assert "no earlier programs" in none  # cannot fit: all references dropped, prompt still well-formed
    assert build_prompt(D, Role.PROPOSE, tokenizer=tok, references=REFS, max_tokens=n_full) == full


def test_prompt_skeleton_is_not_a_valid_answer():
    """If the model parrots the skeleton verbatim, the reply must fail to parse (it earns the format penalty)."""
    for kind in (D, A, IND):
        prompt = build_prompt(kind, Role.PROPOSE, references=REFS[:1])
        skeleton = prompt[prompt.index("<think> <your") :]
        assert not isinstance(parse_proposal(kind, skeleton), ParsedProposal)


def test_missing_task_is_a_clear_error():
    with pytest.raises(ValueError, match="task="):
        build_prompt(D, Role.SOLVE)
    with pytest.raises(ValueError, match="program"):
        build_prompt(IND, Role.PROPOSE)
