"""Prompt builders for the six (task type x role) kinds.

Every prompt is a system message fixing the R1-style reply format (reasoning in ``<think>``, the final answer in
``<answer>`` with fenced ``python`` / ``input`` / ``output`` / ``message`` blocks) and a user message with the task.
With a tokenizer that has a chat template the two messages go through ``apply_chat_template`` (generation prompt
added); otherwise a plain text template is used.

Design rules, from measurements on SmolLM2-135M (see AZR-NOTES): small models copy surface patterns, so the
instructions contain no concrete example values. The reply skeleton shows only the tags and block labels, with
words in angle brackets where the content goes. Real tasks from the buffer are the only code shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azr.types import Role, Task, TaskType

__all__ = ["SYSTEM_PROMPT", "build_prompt", "count_tokens", "demo_reply", "split_induction"]

SYSTEM_PROMPT = (
    "You are a careful Python programmer. First reason step by step inside <think> and </think>. "
    "Then give only the final answer inside <answer> and </answer>, using fenced code blocks labelled "
    "python, input, output or message as the task asks."
)

_RULES = (
    "Rules for the program: it defines a function named f that returns a value; it may define helper "
    "functions; it is deterministic (the same input always gives the same result); it uses no randomness, "
    "clock, files, network, printing, eval or exec; it finishes quickly. An input is the text that goes "
    "between the parentheses of a call to f: one or more Python literals separated by commas."
)


def _block(label: str, body: str) -> str:
    return f"```{label}\n{body}\n```"


def _skeleton(*parts: tuple[str, str]) -> str:
    blocks = "\n".join(_block(label, f"<{what}>") for label, what in parts)
    return f"Reply in exactly this shape:\n<think> <your reasoning> </think>\n<answer>\n{blocks}\n</answer>"


def _triplet(i: int, task: Task) -> str:
    return "\n".join(
        [
            f"Example {i}:",
            _block("python", task.program),
            _block("input", task.input),
            _block("output", task.output),
        ]
    )


def _references_text(references: Sequence[Task]) -> str:
    if not references:
        return "There are no earlier programs yet."
    return "\n\n".join(_triplet(i, t) for i, t in enumerate(references, 1))


def _propose_triplet(kind: TaskType, references: Sequence[Task]) -> str:
    if kind is TaskType.DEDUCTION:
        goal = (
            "Another solver will be shown your program and your input and must work out the exact output. "
            "Make predicting it take real step-by-step reasoning, yet keep it possible."
        )
    else:
        goal = (
            "Another solver will be shown your program and the output it returns for your input, and must "
            "find an input that produces that output. Make finding one take real reasoning, yet keep it possible."
        )
    return "\n\n".join(
        [
            "Your job is to invent a new Python program and one input for it.",
            goal,
            "Here are earlier programs with an input and the output they produce:",
            _references_text(references),
            "Write a program that is different from all of these. "
            + _RULES
            + " Calling f with your input must return without raising an error.",
            _skeleton(("python", "program defining f"), ("input", "one input for f")),
        ]
    )


def _propose_induction(program: str, n_inputs: int) -> str:
    return "\n\n".join(
        [
            "Your job is to design a test that lets another solver rediscover a hidden Python function.",
            "Here is the function:",
            _block("python", program),
            f"Write {n_inputs} different inputs for f that together reveal what it does, covering ordinary and "
            "unusual cases. Each call must return without raising an error. An input is the text that goes between the parentheses of a call to f: one or more "
            "Python literals separated by commas. Put each input in its own input block.",
            "Then write a message block with a short hint for the solver, who will see only some inputs with "
            "their outputs and your message. Describe the task the function performs without giving its code.",
            _skeleton(("input", "first input"), ("input", "next input, and so on"), ("message", "your hint")),
        ]
    )


def _solve_deduction(task: Task) -> str:
    return "\n\n".join(
        [
            "Work out what this Python program returns.",
            _block("python", task.program),
            "It is called with this input:",
            _block("input", task.input),
            "Give the exact returned value as a Python literal.",
            _skeleton(("output", "the returned value")),
        ]
    )


def _solve_abduction(task: Task) -> str:
    return "\n\n".join(
        [
            "Find an input for this Python program that makes it return the given output.",
            _block("python", task.program),
            "The call must return exactly:",
            _block("output", task.output),
            "An input is the text that goes between the parentheses of a call to f: one or more Python literals "
            "separated by commas. Any input that produces this output is correct.",
            _skeleton(("input", "an input for f")),
        ]
    )


def split_induction(task: Task, n_visible: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split an induction task's pairs into the shown ones and the hidden tests.

    The first ``n_visible`` pairs are shown, but at least one pair stays hidden when the task has two or more
    (the six-input identity induction seed task with ``n_visible=5`` shows 5 and keeps 1 as the test).
    """
    pairs = list(zip(task.inputs, task.outputs, strict=True))
    k = max(0, min(n_visible, len(pairs) - 1)) if len(pairs) > 1 else len(pairs)
    return pairs[:k], pairs[k:]


def _solve_induction(task: Task, n_visible: int) -> str:
    visible, _ = split_induction(task, n_visible)
    shown = "\n\n".join(
        f"Case {i}:\n{_block('input', inp)}\n{_block('output', out)}"
        for i, (inp, out) in enumerate(visible, 1)
    )
    return "\n\n".join(
        [
            "Write a Python function f that maps each input below to its output. It will also be tested on "
            "inputs you do not see.",
            shown,
            "A hint from the task author:",
            _block("message", task.message or "(no hint)"),
            "Give the whole program; f must be deterministic and use no randomness, clock, files or printing.",
            _skeleton(("python", "program defining f")),
        ]
    )


_DEMO_THINK = "<think> I read the task, reason it through step by step and check the answer. </think>"


def trace_think(kind: TaskType, task: Task, trace: str) -> str:
    """A demonstration's ``<think>`` holding ``trace``, the sandbox's line-by-line trace of ``f(task.input)``
    (:meth:`azr.executor.Executor.trace_many`): a deduction solve follows the run to the output; an abduction
    solve tries its input and checks the output it gives."""
    run = f"Run f({task.input}) line by line:\n{trace}"
    if TaskType(kind) is TaskType.ABDUCTION:
        return f"<think> Try the input {task.input}. {run}\nIt gives {task.output}, the output asked for. </think>"
    return f"<think> {run}\nSo the output is {task.output}. </think>"


def demo_reply(kind: TaskType, role: Role, task: Task, n_inputs: int = 10, think: str | None = None) -> str:
    """The ideal reply for ``task`` in the (kind, role) prompt: a worked demonstration built from a buffer task.

    Deduction/abduction proposals answer with the task's program and input; an induction proposal (``task`` is an
    induction task) with its inputs and message; solvers with the gold answer (output, input or program).
    ``think`` replaces the default one-sentence ``<think>`` block (see :func:`trace_think`).
    """
    kind, role = TaskType(kind), Role(role)
    if role is Role.PROPOSE and kind is TaskType.INDUCTION:
        blocks = [_block("input", i) for i in task.inputs[:n_inputs]] + [_block("message", task.message)]
    elif role is Role.PROPOSE:
        blocks = [_block("python", task.program), _block("input", task.input)]
    elif kind is TaskType.DEDUCTION:
        blocks = [_block("output", task.output)]
    elif kind is TaskType.ABDUCTION:
        blocks = [_block("input", task.input)]
    else:
        blocks = [_block("python", task.program)]
    return (think or _DEMO_THINK) + "\n<answer>\n" + "\n".join(blocks) + "\n</answer>"


def _user_message(
    kind: TaskType, role: Role, references: Sequence[Task], task: Task | None, n_inputs: int, n_visible: int
) -> str:
    if role is Role.PROPOSE:
        if kind is TaskType.INDUCTION:
            source = task if task is not None else (references[0] if references else None)
            if source is None:
                raise ValueError("an induction proposal prompt needs a program: pass task= or references=")
            return _propose_induction(source.program, n_inputs)
        return _propose_triplet(kind, references)
    if task is None:
        raise ValueError(f"a {kind.value} solve prompt needs task=")
    if kind is TaskType.DEDUCTION:
        return _solve_deduction(task)
    if kind is TaskType.ABDUCTION:
        return _solve_abduction(task)
    return _solve_induction(task, n_visible)


def _render(user: str, tokenizer: Any, shots: Sequence[tuple[str, str]] = ()) -> str:
    """System message, optional demonstration turns (user, assistant), then the task."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for question, answer in shots:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    demos = "".join(f"### Task\n{q}\n\n### Reply\n{a}\n\n" for q, a in shots)
    return f"{SYSTEM_PROMPT}\n\n{demos}### Task\n{user}\n\n### Reply\n"


def _shot_question(kind: TaskType, role: Role, shot: Task, n_inputs: int, n_visible: int) -> str:
    """A demonstration's question: the same wording as the real task (measured: a 135M model loses the reply
    format when demonstrations are shortened), but proposal demonstrations show no references of their own."""
    if role is Role.PROPOSE and kind is not TaskType.INDUCTION:
        return _user_message(kind, role, (), None, n_inputs, n_visible)
    return _user_message(kind, role, (), shot, n_inputs, n_visible)


def _shot_turns(
    kind: TaskType,
    role: Role,
    shots: Sequence[Task],
    n_inputs: int,
    n_visible: int,
    thinks: Sequence[str | None] = (),
) -> list[tuple[str, str]]:
    # Shots dropped to fit the token budget drop their thinks too.
    thinks = [*thinks[: len(shots)], *[None] * (len(shots) - len(thinks))]
    return [
        (_shot_question(kind, role, shot, n_inputs, n_visible), demo_reply(kind, role, shot, n_inputs, think))
        for shot, think in zip(shots, thinks, strict=True)
    ]


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """Tokens in ``text`` (special tokens already in the text count); about 4 characters a token without one."""
    if tokenizer is None:
        return (len(text) + 3) // 4
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_prompt(
    kind: TaskType,
    role: Role,
    *,
    tokenizer: Any = None,
    references: Sequence[Task] = (),
    task: Task | None = None,
    n_inputs: int = 10,
    n_visible: int = 5,
    max_tokens: int | None = None,
    shots: Sequence[Task] = (),
    thinks: Sequence[str | None] = (),
) -> str:
    """The final prompt string for one (task type x role) kind, ready to feed the model.

    Deduction/abduction proposals show ``references`` (K triplets); an induction proposal shows one program
    (``task``, or else ``references[0]``) and asks for ``n_inputs`` inputs and a message; solve prompts show
    ``task``. ``shots`` are buffer tasks turned into worked demonstrations (a user turn and the ideal reply,
    see :func:`demo_reply`) placed before the task: small models learn the reply format from them (an induction
    proposal's shots must be induction tasks); ``thinks`` optionally gives each shot's ``<think>`` block. If
    ``max_tokens`` is given and the prompt is longer, shots and
    then references are dropped from the end until it fits (down to none).
    """
    kind, role = TaskType(kind), Role(role)
    refs, demos = list(references), list(shots)
    while True:
        turns = _shot_turns(kind, role, demos, n_inputs, n_visible, thinks)
        prompt = _render(_user_message(kind, role, refs, task, n_inputs, n_visible), tokenizer, turns)
        shrinkable = demos or (role is Role.PROPOSE and kind is not TaskType.INDUCTION and refs)
        if max_tokens is None or not shrinkable or count_tokens(prompt, tokenizer) <= max_tokens:
            return prompt
        if demos:
            demos.pop()
        else:
            refs.pop()
