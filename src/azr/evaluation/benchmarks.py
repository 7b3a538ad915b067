"""The benchmark registry: for each name, where its rows live, how a row becomes a prompt, what the gold (and a
wrong) reply looks like, and which scorer reads the replies.

| name | family | gold | scored by | new tokens |
|---|---|---|---|---|
| cruxeval-o | crux-o | ``output`` literal | ``literals_equal`` (training's deduction equality) | 96 |
| cruxeval-i | crux-i | ``input`` argument text | ``f(pred) == output`` in the sandbox (expressions too) | 96 |
| probe, probe-600 | selfplay | training gold answer | the training scorer (:mod:`.probe`) | 256 |
| humaneval+, mbpp+ | code | canonical solution | evalplus-style, all inputs in one sandboxed child | 768 |
| gsm8k, math500, aime24, aime25, amc23, minerva, olympiadbench | math | per-dataset answer | math-verify | 1024 |
| livecodebench | - | - | not scored yet: always skipped with a message | - |

Demonstrations (``shots=K``): CRUXEval-O/-I and the probe put the first K ``demos.jsonl`` tasks of the matching
type before each item as the training prompts' shot turns, so the prompt equals a training solve prompt with K
demonstrations; HumanEval+/MBPP+ put K ``code`` demonstrations as earlier chat turns; math takes none.

Speed: CRUXEval replies get 96 new tokens (the CPU training budget ``rollout.max_new_tokens_solve``), so that
all 800 CRUXEval-O items with 2 shots decode in well under 10 minutes on 2 cores (about 5.5 minutes, measured
with SmolLM2-135M, in batches of 32: ``azr eval`` decodes ``2 * --batch-size`` = 32 sequences together). A
reply that needs more is cut and counts as wrong; ``--max-new-tokens`` raises the budget.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from typing import Any

from azr.evaluation import scoring_math as sm
from azr.evaluation import templates as tpl
from azr.evaluation.demos import NO_SHOTS, Demo, Shots, code_reply, humaneval_prompt, mbpp_prompt
from azr.evaluation.loaders import BenchmarkUnavailable, Source
from azr.evaluation.oracles import mbpp_inputs
from azr.evaluation.probe import probe_benchmark
from azr.evaluation.scoring_code import (
    CodeProblem,
    score_input_predictions,
    score_output_predictions,
    score_programs,
)
from azr.evaluation.spec import WRONG, Benchmark, Item, PromptFn, ScoreContext, Scored
from azr.types import Role, Task, TaskType

__all__ = ["ALIASES", "BENCHMARKS", "Benchmark", "Item", "ScoreContext", "Scored", "resolve", "with_tokens"]


# ---- CRUXEval: the training prompts and parsers -------------------------------------------------------------


def _crux_item(row: dict[str, Any], i: int) -> Item:
    return Item(
        str(row.get("id", i)),
        row["output"],
        {"code": row["code"], "input": row["input"], "output": row["output"]},
    )


def _crux_task(item: Item, kind: TaskType) -> Task:
    d = item.data
    return Task(type=kind, program=d["code"], inputs=(d["input"],), outputs=(d["output"],), origin="imported")


def _crux_reply(label: str, body: str) -> str:
    return f"<think> </think>\n<answer>\n```{label}\n{body}\n```\n</answer>"


def _parsed(kind: TaskType, reply: str) -> str | None:
    from azr.tasks.parsing import parse_solution

    result = parse_solution(kind, reply)
    return result.answer if result.ok else None


def _crux_prompt(kind: TaskType) -> PromptFn:
    def build(item: Item, tokenizer: Any, shots: Shots = NO_SHOTS) -> str:
        from azr.tasks.prompts import build_prompt

        demos, thinks = shots.solve_shots(kind.value)
        task = _crux_task(item, kind)
        return build_prompt(kind, Role.SOLVE, tokenizer=tokenizer, task=task, shots=demos, thinks=thinks)

    return build


def crux_input_answer(reply: str) -> str | None:
    """The argument text of a CRUXEval-I reply, read like the training parser (first ``input`` block, or the
    bare answer when it has no blocks; a whole call ``f(...)`` unwrapped) but with no literal check: expressions
    are scored by running them. An empty ``input`` block is the call ``f()``; None means no answer."""
    from azr.tasks.parsing import extract_answer, fenced_blocks

    answer = extract_answer(reply)
    if answer is None or not answer.strip():
        return None
    blocks = fenced_blocks(answer)
    chosen = [body for label, body in blocks if label == "input"]
    if not chosen and blocks:
        return None
    return _unwrap_call((chosen[0] if chosen else answer).strip())


def _unwrap_call(text: str) -> str:
    """``f(<args>)`` -> ``<args>``; any other text unchanged."""
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return text
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "f"):
        return text
    if ast.get_source_segment(text, tree) != text:  # "(f(1))": the call is not the whole text
        return text
    return text[text.index("(") + 1 : text.rindex(")")].strip()


def _score_crux_o(ctx: ScoreContext, items: list[Item], replies: list[str]) -> list[Scored]:
    preds = [_parsed(TaskType.DEDUCTION, r) for r in replies]
    verdicts = score_output_predictions(preds, [it.data["output"] for it in items])
    return [Scored(v.correct, p, v.detail) for v, p in zip(verdicts, preds, strict=True)]


def set_copy_scores(executor: Any, items: list[Item]) -> None:
    """Set ``copy_scores`` on CRUXEval-I items: would writing the shown output back as the input score? (the
    shortcut accounting's copy baseline, run in the sandbox)"""
    outputs = [it.data["output"] for it in items]
    verdicts = score_input_predictions(executor, [it.data["code"] for it in items], list(outputs), outputs)
    for it, v in zip(items, verdicts, strict=True):
        it.data["copy_scores"] = v.correct


def _score_crux_i(ctx: ScoreContext, items: list[Item], replies: list[str]) -> list[Scored]:
    if ctx.executor is None:
        raise ValueError("cruxeval-i needs an executor")
    preds = [crux_input_answer(r) for r in replies]
    programs = [it.data["code"] for it in items]
    outputs = [it.data["output"] for it in items]
    verdicts = score_input_predictions(ctx.executor, programs, preds, outputs)
    set_copy_scores(ctx.executor, items)
    return [Scored(v.correct, p, v.detail) for v, p in zip(verdicts, preds, strict=True)]


# ---- HumanEval+ / MBPP+ ---------------------------------------------------------------------------------------


def _code_item(mbpp: bool) -> Callable[[dict[str, Any], int], Item]:
    def make(row: dict[str, Any], i: int) -> Item:
        tid, entry = row["task_id"], row["entry_point"]
        raw = list(row["base_input"]) + list(row["plus_input"])
        inputs = tuple(tuple(mbpp_inputs(tid, a) if mbpp else a) for a in raw)
        reference = row["canonical_solution"] if mbpp else row["prompt"] + row["canonical_solution"]
        problem = CodeProblem(tid, entry, reference, inputs, float(row.get("atol") or 0))
        return Item(tid, reference, {"problem": problem, "prompt": row["prompt"], "mbpp": mbpp})

    return make


def _code_message(prompt: str, entry: str, mbpp: bool) -> str:
    return tpl.mbpp_message(prompt, entry) if mbpp else tpl.humaneval_message(prompt)


def _code_turn(demo: Demo, mbpp: bool) -> tuple[str, str]:
    """A code demonstration as one (user, assistant) turn in the benchmark's own template."""
    prompt = mbpp_prompt(demo) if mbpp else humaneval_prompt(demo)
    return _code_message(prompt, demo.entry, mbpp), code_reply(demo)


def _code_prompt(item: Item, tokenizer: Any, shots: Shots = NO_SHOTS) -> str:
    """The item's message after ``shots`` code demonstrations in the same template (prompt -> fenced code)."""
    d = item.data
    turns = [_code_turn(demo, d["mbpp"]) for demo in shots.of("code")]
    message = _code_message(d["prompt"], d["problem"].entry, d["mbpp"])
    return tpl.render(tpl.CODE_SYSTEM, message, tokenizer, turns)


def _code_oracle(item: Item, wrong: bool) -> str:
    entry = item.data["problem"].entry
    code = f"def {entry}(*args, **kwargs):\n    return {WRONG}\n" if wrong else item.gold
    return f"```python\n{code}\n```"


def _score_code(ctx: ScoreContext, items: list[Item], replies: list[str]) -> list[Scored]:
    codes = []
    for item, reply in zip(items, replies, strict=True):
        d = item.data
        mbpp, prompt, entry = d["mbpp"], d["prompt"], d["problem"].entry
        codes.append(tpl.extract_code(reply) if mbpp else tpl.humaneval_program(prompt, entry, reply))
    problems = [it.data["problem"] for it in items]
    verdicts = score_programs(ctx.executor, ctx.expected(), problems, codes)  # type: ignore[arg-type]
    return [Scored(v.correct, c, v.detail) for v, c in zip(verdicts, codes, strict=True)]


# ---- math ------------------------------------------------------------------------------------------------------


def _math_item(gold: Callable[[dict[str, Any]], str], question: str) -> Callable[[dict[str, Any], int], Item]:
    def make(row: dict[str, Any], i: int) -> Item:
        text = row.get(question) or row.get("problem") or row.get("question") or ""
        rid = row.get("unique_id") or row.get("id") or row.get("idx")
        return Item(str(rid if rid is not None else i), gold(row), {"problem": text})

    return make


def _math_prompt(item: Item, tokenizer: Any, shots: Shots = NO_SHOTS) -> str:
    return tpl.render(tpl.MATH_SYSTEM, tpl.math_message(item.data["problem"]), tokenizer)


def _math_oracle(item: Item, wrong: bool) -> str:
    return f"The final answer is $\\boxed{{{'-7919' if wrong else item.gold}}}$."


def _score_math(ctx: ScoreContext, items: list[Item], replies: list[str]) -> list[Scored]:
    verdicts = ctx.judge().judge_many([(it.gold, r) for it, r in zip(items, replies, strict=True)])
    return [Scored(v, sm.extract_answer(r)) for v, r in zip(verdicts, replies, strict=True)]


# ---- the registry --------------------------------------------------------------------------------------------


def _unavailable(item: Item, *_: Any) -> Any:
    raise BenchmarkUnavailable("livecodebench scoring is not implemented yet")


def _livecodebench() -> Benchmark:
    def make(row: dict[str, Any], i: int) -> Item:
        raise BenchmarkUnavailable(
            "livecodebench: data loaded, but its stdin/stdout scorer is not implemented yet; skipped"
        )

    source = Source((), "livecodebench/code_generation_lite", "test")
    return Benchmark("livecodebench", "code", source, make, _unavailable, _unavailable, _unavailable)


def _crux(
    name: str, kind: TaskType, score: Callable[..., list[Scored]], label: str, field_: str
) -> Benchmark:
    wrong_answer = WRONG if kind is TaskType.DEDUCTION else "None"
    return Benchmark(
        name,
        name.replace("cruxeval", "crux"),
        Source(("cruxeval*.jsonl*",), "cruxeval-org/cruxeval"),
        _crux_item,
        _crux_prompt(kind),
        lambda item, wrong: _crux_reply(label, wrong_answer if wrong else item.data[field_]),
        score,
        max_new_tokens=96,
        stop=("</answer>",),
        demo_types=(kind.value,),
    )


def _code(name: str, pattern: str, hub_id: str, mbpp: bool) -> Benchmark:
    source = Source((pattern,), hub_id)
    return Benchmark(
        name,
        "code",
        source,
        _code_item(mbpp),
        _code_prompt,
        _code_oracle,
        _score_code,
        768,
        demo_types=("code",),
    )


def _math(
    name: str, pattern: str, hub: tuple[str, str, str | None], gold: Callable[..., str], q: str
) -> Benchmark:
    source = Source((pattern,), hub[0], hub[1], hub[2])
    return Benchmark(name, "math", source, _math_item(gold, q), _math_prompt, _math_oracle, _score_math, 1024)


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        _crux("cruxeval-o", TaskType.DEDUCTION, _score_crux_o, "output", "output"),
        _crux("cruxeval-i", TaskType.ABDUCTION, _score_crux_i, "input", "input"),
        probe_benchmark(),
        probe_benchmark("probe-600"),
        _code("humaneval+", "HumanEvalPlus*.jsonl*", "evalplus/humanevalplus", mbpp=False),
        _code("mbpp+", "MbppPlus*.jsonl*", "evalplus/mbppplus", mbpp=True),
        _math("gsm8k", "gsm8k*.jsonl*", ("openai/gsm8k", "test", "main"), sm.gold_gsm8k, "question"),
        _math(
            "math500", "math500*.jsonl*", ("HuggingFaceH4/MATH-500", "test", None), sm.gold_field, "problem"
        ),
        _math("aime24", "aime24*.jsonl*", ("math-ai/aime24", "test", None), sm.gold_field, "problem"),
        _math("aime25", "aime25*.jsonl*", ("math-ai/aime25", "test", None), sm.gold_field, "problem"),
        _math("amc23", "amc23*.jsonl*", ("math-ai/amc23", "test", None), sm.gold_field, "problem"),
        _math(
            "minerva", "minerva*.jsonl*", ("math-ai/minervamath", "test", None), sm.gold_minerva, "problem"
        ),
        _math(
            "olympiadbench",
            "olympiadbench*.jsonl*",
            ("math-ai/olympiadbench", "test", None),
            sm.gold_olympiad,
            "question",
        ),
        _livecodebench(),
    ]
}

ALIASES = {"humaneval": "humaneval+", "mbpp": "mbpp+", "minerva_math": "minerva", "lcb": "livecodebench"}


def resolve(names: list[str]) -> list[Benchmark]:
    """Benchmarks by name (aliases accepted); an unknown name raises ValueError listing the known ones."""
    out = []
    for raw in names:
        name = ALIASES.get(raw.strip().lower(), raw.strip().lower())
        if name not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {raw!r} (known: {', '.join(BENCHMARKS)})")
        out.append(BENCHMARKS[name])
    return out


def with_tokens(bench: Benchmark, max_new_tokens: int | None) -> Benchmark:
    """The same benchmark with another token budget (None keeps its own)."""
    return bench if max_new_tokens is None else dataclasses.replace(bench, max_new_tokens=max_new_tokens)
