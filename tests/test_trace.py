"""Sandbox-written execution traces in solve demonstrations (``selfplay.demo_trace``, beyond the paper)."""

from __future__ import annotations

import re

import pytest

from azr.config import ConfigError, from_dict
from azr.rollout import ScriptedBackend
from azr.selfplay.step import SelfPlay
from azr.store import TaskStore
from azr.tasks.prompts import build_prompt, demo_reply, trace_think
from azr.types import Role, Task, TaskType

SUM = "def f(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s"
HELPER = "def g(a):\n    return a * 2\n\ndef f(n):\n    out = [g(i) for i in range(n)]\n    return set(out)"
FACT = "def f(n):\n    if n <= 1:\n        return 1\n    return n * f(n - 1)"


def test_trace_lists_changed_variables_then_the_returned_value(executor):
    sum_trace, helper_trace, fact_trace = executor.trace_many(
        [(SUM, "[1, 2, 3]"), (HELPER, "3"), (FACT, "3")]
    )
    assert sum_trace == "s = 0\nx = 1\ns = 1\nx = 2\ns = 3\nx = 3\ns = 6\nreturn 6"
    # Other functions' frames are named; the outer call's arguments are not repeated; sets come out sorted.
    assert helper_trace == "g: a = 0\ng: a = 1\ng: a = 2\nout = [0, 2, 4]\nreturn {0, 2, 4}"
    # In a recursion the returned value is the outer call's, not the first return that happens.
    assert fact_trace == "f: n = 2\nf: n = 1\nreturn 6"


def test_trace_is_cut_and_fails_cleanly(executor):
    long_loop = "def f(n):\n    t = 0\n    for i in range(n):\n        t += i\n    return t"
    traces = executor.trace_many(
        [
            (long_loop, "100"),
            ("def f(x):\n    return 1 / 0", "1"),
            ("def f(x):\n    while True:\n        x += 1", "0"),
        ],
        max_lines=4,
    )
    assert traces[0] == "t = 0\ni = 0\ni = 1\nt = 1\n...\nreturn 4950"
    assert traces[1] is None and traces[2] is None  # an exception or a timeout gives no trace


def test_trace_runs_in_the_sandbox_not_here(executor):
    """A program that writes a file from inside the traced call leaves nothing in the trainer's directory."""
    program = "def f(x):\n    open('azr-trace-escape', 'w').write('x')\n    return x"
    executor.trace_many([(program, "1")])
    from pathlib import Path

    assert not Path("azr-trace-escape").exists()


def test_trace_think_for_deduction_and_abduction():
    task = Task(TaskType.DEDUCTION, SUM, ("[1, 2]",), ("3",))
    think = trace_think(TaskType.DEDUCTION, task, "s = 0\nreturn 3")
    assert think == "<think> Run f([1, 2]) line by line:\ns = 0\nreturn 3\nSo the output is 3. </think>"
    abduction = trace_think(TaskType.ABDUCTION, task, "s = 0\nreturn 3")
    assert abduction.startswith("<think> Try the input [1, 2]. Run f([1, 2]) line by line:")
    assert abduction.endswith("It gives 3, the output asked for. </think>")
    reply = demo_reply(TaskType.DEDUCTION, Role.SOLVE, task, think=think)
    assert reply == think + "\n<answer>\n```output\n3\n```\n</answer>"
    # Shots without a think keep the default sentence; a prompt that must shrink drops shots with their thinks.
    other = Task(TaskType.DEDUCTION, FACT, ("2",), ("2",))
    prompt = build_prompt(TaskType.DEDUCTION, Role.SOLVE, task=task, shots=[task, other], thinks=[think])
    assert think in prompt and "I read the task" in prompt
    short = build_prompt(
        TaskType.DEDUCTION, Role.SOLVE, task=other, shots=[other, task], thinks=[None, think], max_tokens=300
    )
    assert think not in short


def test_demo_trace_needs_shots():
    with pytest.raises(ConfigError, match="demo_trace"):
        from_dict({"selfplay": {"demo_trace": 8, "n_shots": 0}})
    with pytest.raises(ConfigError, match="demo_trace"):
        from_dict({"selfplay": {"demo_trace": -1}})


def test_selfplay_shows_traces_in_solve_demonstrations_only(tmp_path, executor, tiny):
    _, tokenizer = tiny
    prompts: list[str] = []

    def reply(prompt: str) -> str:
        prompts.append(prompt)
        return "<think>x</think><answer>\n```output\n1\n```\n</answer>"

    cfg = from_dict(
        {
            "selfplay": {
                "batch_size": 2,
                "n_mc_rollouts": 2,
                "n_shots": 2,
                "demo_trace": 6,
                "n_references": 1,
            },
            "rollout": {"max_prompt_tokens": 4096},
        }
    )
    store = TaskStore(tmp_path / "tasks.sqlite")
    tasks = [
        Task(kind, SUM.replace("s = 0", f"s = {i}"), (f"[{i}, {i + 1}]",), (str(3 * i + 1),))
        for kind in (TaskType.DEDUCTION, TaskType.ABDUCTION)
        for i in range(4)
    ]
    tasks += [Task(TaskType.INDUCTION, SUM, ("[1]", "[2]", "[3]"), ("1", "2", "3"), "sums", step=0)]
    store.add_tasks(tasks, 0)
    sp = SelfPlay(cfg, ScriptedBackend(reply, tokenizer=tokenizer), executor, store, tokenizer, seed=0)
    sp.step(1)
    solves = [p for p in prompts if "what this Python program returns" in p or "Find an input" in p]
    proposals = [p for p in prompts if "invent a new Python program" in p]
    assert solves and proposals
    missing = [p for p in solves if not re.search(r"line by line:\ns = \d\nx = ", p)]
    assert not missing, missing[0][-3000:]
    assert not any("line by line" in p for p in proposals)
