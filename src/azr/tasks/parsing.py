"""Total parsers for the model's replies: any string in, a typed result out.

A reply is R1-style: reasoning inside ``<think>...</think>``, then the final answer inside ``<answer>...</answer>``.
The generator stops at ``</answer>`` and may strip it, so a missing closing tag is accepted. Inside the answer the
parts are fenced blocks labelled ``python``, ``input``, ``output`` and ``message``:

- deduction / abduction proposal: one ```` ```python ```` block defining ``f`` and one ```` ```input ```` block;
- induction proposal: one ```` ```input ```` block per input (a single block with one input per line is also read)
  and one ```` ```message ```` block;
- deduction solution: an ```` ```output ```` block holding a Python literal (a bare answer is accepted too);
- abduction solution: an ```` ```input ```` block with argument text (a bare answer is accepted too);
- induction solution: a ```` ```python ```` block defining ``f``.

Nothing here runs code: programs are only parsed with :mod:`ast`, and inputs and outputs must be literals
(checked with the executor's non-evaluating ``parse_arguments`` / ``parse_literal``). No function in this module raises;
failures come back as :class:`ParseFailure` with a :class:`ParseReason`. An exception inside a parser is a bug of
this module, not a format failure of the model: it comes back as ``ParseReason.PARSER_ERROR`` (the exception type in
``detail``), and the self-play step leaves such replies out of the rewards and the update and counts them in
``<role>/parser_error_rate/<type>``.
"""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from dataclasses import dataclass
from enum import StrEnum

from azr.executor import parse_arguments, parse_literal
from azr.types import TaskType

__all__ = [
    "ParseFailure",
    "ParseReason",
    "ParsedProposal",
    "ParsedSolution",
    "canonical_input",
    "canonical_program",
    "extract_answer",
    "fenced_blocks",
    "normalize_input",
    "parse_proposal",
    "parse_solution",
]

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
_THINK_CLOSE = "</think>"
_FENCE_HEAD = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)(.*)\Z", re.DOTALL)
_LABELS = {"python": "python", "py": "python", "python3": "python", "input": "input", "output": "output"}
_LABELS["message"] = "message"
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError, TypeError)


class ParseReason(StrEnum):
    """Why a reply could not be read. Every such reply gets the format penalty, except ``PARSER_ERROR``."""

    NO_ANSWER_TAG = "no_answer_tag"
    EMPTY_ANSWER = "empty_answer"
    NO_CODE_BLOCK = "no_code_block"
    BAD_PROGRAM = "bad_program"  # the python block is not valid Python
    NO_F = "no_f"  # no top-level ``def f``
    MULTIPLE_F = "multiple_f"  # ``f`` defined more than once at top level
    NO_INPUT = "no_input"
    BAD_INPUT = "bad_input"  # not call-argument text made of literals
    NO_OUTPUT = "no_output"
    BAD_OUTPUT = "bad_output"  # not a Python literal
    NO_MESSAGE = "no_message"
    TOO_FEW_INPUTS = "too_few_inputs"
    UNREADABLE = "unreadable"  # not a string
    PARSER_ERROR = "parser_error"  # the parser raised: a bug in azr, not the model's fault (never expected)


@dataclass(frozen=True)
class ParseFailure:
    """A reply that could not be read; ``detail`` is a short human note."""

    reason: ParseReason
    detail: str = ""

    @property
    def ok(self) -> bool:
        return False


@dataclass(frozen=True)
class ParsedProposal:
    """A proposal read from a reply. Induction proposals have an empty ``program`` (the program is given)."""

    kind: TaskType
    program: str
    inputs: tuple[str, ...]
    message: str = ""

    @property
    def ok(self) -> bool:
        return True


@dataclass(frozen=True)
class ParsedSolution:
    """A solver's answer: an output literal (deduction), argument text (abduction) or a program (induction)."""

    kind: TaskType
    answer: str

    @property
    def ok(self) -> bool:
        return True


def extract_answer(text: str) -> str | None:
    """The text inside the answer tags after the reasoning, or None when there is no ``<answer>`` tag."""
    if not isinstance(text, str):
        return None
    think_end = text.rfind(_THINK_CLOSE)
    start = text.find(_ANSWER_OPEN, think_end + len(_THINK_CLOSE) if think_end >= 0 else 0)
    if start < 0:
        start = text.find(_ANSWER_OPEN)  # an answer written inside an unclosed think block
        if start < 0:
            return None
    body = text[start + len(_ANSWER_OPEN) :]
    end = body.find(_ANSWER_CLOSE)
    return body if end < 0 else body[:end]


def fenced_blocks(answer: str) -> list[tuple[str, str]]:
    """``(label, content)`` of every fenced block, in order; labels normalised (``py`` -> ``python``).

    Read line by line: a line starting with three backticks opens a block (its label follows); the block ends at
    the next line starting with three backticks, or at a line ending with them, or at the end of the answer (a
    truncated reply). A one-line block (fence, label, content and fence on one line) is read too.
    """
    out = []
    lines = answer.split("\n")
    i = 0
    while i < len(lines):
        head = lines[i].strip()
        i += 1
        if not head.startswith("```"):
            continue
        m = _FENCE_HEAD.match(head[3:])
        label = _LABELS.get(m.group(1).lower(), m.group(1).lower()) if m else ""
        tail = m.group(2) if m else head[3:]
        if "```" in tail:
            out.append((label, tail[: tail.index("```")].strip()))
            continue
        body = [tail.strip()] if tail.strip() else []
        while i < len(lines):
            line = lines[i]
            i += 1
            if line.strip().startswith("```"):
                break
            if line.rstrip().endswith("```"):
                body.append(line.rstrip()[:-3])
                break
            body.append(line)
        out.append((label, "\n".join(body).strip("\n")))
    return out


def _blocks(answer: str, label: str) -> list[str]:
    return [body for lab, body in fenced_blocks(answer) if lab == label]


def normalize_input(text: str) -> str | None:
    """Check that ``text`` is call-argument text whose values are all literals; return it stripped, or None.

    A whole call ``f(...)`` is unwrapped to its arguments. Parsing only (``azr.executor.parse_arguments``);
    nothing is evaluated.
    """
    text = text.strip()
    if not text or "\x00" in text:
        return None
    try:
        tree = ast.parse(text, mode="eval").body
        is_f = isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "f"
        if is_f and ast.get_source_segment(text, tree) == text:
            inner = text[text.index("(") + 1 : text.rindex(")")].strip()
            return normalize_input(inner) if inner else None
    except _PARSE_ERRORS:
        pass
    return text if parse_arguments(text)[0] else None


def canonical_input(text: str) -> str:
    """A normal form of argument text for deduplication (spacing, quote style, trailing commas ignored)."""
    try:
        call = ast.parse(f"f({text}\n)", mode="eval").body
        return ast.unparse(call)[2:-1]
    except _PARSE_ERRORS:
        return text.strip()


def canonical_program(program: str) -> str:
    """A normal form of a program for deduplication: ``ast.unparse`` drops comments and formatting."""
    try:
        return ast.unparse(ast.parse(program))
    except _PARSE_ERRORS:
        return program.strip()


def _check_literal(text: str) -> bool:
    return bool(text.strip()) and "\x00" not in text and parse_literal(text.strip())[0]


def _clean_program(code: str) -> str | ParseFailure:
    """Check that ``code`` parses and defines ``f`` once at top level; drop top-level calls and main blocks."""
    if not code.strip():
        return ParseFailure(ParseReason.NO_CODE_BLOCK, "empty python block")
    if code[:1] in (" ", "\t"):  # a block indented as a whole
        code = textwrap.dedent(code)
    try:
        tree = ast.parse(code)
    except _PARSE_ERRORS as e:
        return ParseFailure(ParseReason.BAD_PROGRAM, f"{type(e).__name__}: {e}"[:200])
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == "f"]
    if not defs:
        return ParseFailure(ParseReason.NO_F, "no top-level def f")
    if len(defs) > 1:
        return ParseFailure(ParseReason.MULTIPLE_F, f"{len(defs)} definitions of f")
    lines = code.splitlines()
    drop: set[int] = set()
    for node in tree.body:
        if _is_driver(node):
            drop.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")
    try:
        ast.parse(kept)  # a dropped line may have shared a statement with kept code (``x = 1; f(x)``)
    except _PARSE_ERRORS:
        return code.strip("\n")
    return kept


def _is_driver(node: ast.stmt) -> bool:
    """Top-level statements that only exercise the program: bare calls, prints, asserts, ``if __name__ == ...``."""
    if isinstance(node, ast.Assert):
        return True
    if isinstance(node, ast.Expr):
        return not (isinstance(node.value, ast.Constant) and isinstance(node.value.value, str))
    if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
        left = node.test.left
        return isinstance(left, ast.Name) and left.id == "__name__"
    return False


def _split_inputs(blocks: list[str]) -> list[str]:
    """Inputs of an induction proposal: one per block, or one per line when a single block holds several."""
    if len(blocks) == 1 and "\n" in blocks[0].strip():
        lines = [ln.strip() for ln in blocks[0].splitlines() if ln.strip()]
        if all(normalize_input(ln) is not None for ln in lines):
            return lines
    return [b for b in blocks if b.strip()]


def _parser_error(e: Exception) -> ParseFailure:
    return ParseFailure(ParseReason.PARSER_ERROR, f"internal: {type(e).__name__}: {e}"[:200])


def parse_proposal(kind: TaskType, text: str, *, min_inputs: int = 1) -> ParsedProposal | ParseFailure:
    """Read a proposer's reply for task type ``kind``. Never raises."""
    if not isinstance(text, str):
        return ParseFailure(ParseReason.UNREADABLE, f"not a string: {type(text).__name__}")
    try:
        with warnings.catch_warnings():  # compiling model text may warn (e.g. "invalid decimal literal")
            warnings.simplefilter("ignore", SyntaxWarning)
            return _parse_proposal(TaskType(kind), text, min_inputs)
    except Exception as e:  # a parser must be total; this is a bug net, not a code path
        return _parser_error(e)


def _parse_proposal(kind: TaskType, text: str, min_inputs: int) -> ParsedProposal | ParseFailure:
    answer = extract_answer(text)
    if answer is None:
        return ParseFailure(ParseReason.NO_ANSWER_TAG)
    if not answer.strip():
        return ParseFailure(ParseReason.EMPTY_ANSWER)
    if kind is TaskType.INDUCTION:
        raw = _split_inputs(_blocks(answer, "input"))
        if not raw:
            return ParseFailure(ParseReason.NO_INPUT)
        inputs = [normalize_input(r) for r in raw]
        bad = sum(i is None for i in inputs)
        good = tuple(i for i in inputs if i is not None)
        if len(good) < max(1, min_inputs):
            reason = ParseReason.BAD_INPUT if bad and not good else ParseReason.TOO_FEW_INPUTS
            return ParseFailure(reason, f"{len(good)} readable inputs, {bad} unreadable")
        messages = [m.strip() for m in _blocks(answer, "message") if m.strip()]
        if not messages:
            return ParseFailure(ParseReason.NO_MESSAGE)
        return ParsedProposal(kind, "", good, messages[0])
    programs = _blocks(answer, "python")
    if not programs:
        return ParseFailure(ParseReason.NO_CODE_BLOCK)
    program = _clean_program(programs[0])
    if isinstance(program, ParseFailure):
        return program
    raw_inputs = [b for b in _blocks(answer, "input") if b.strip()]
    if not raw_inputs:
        return ParseFailure(ParseReason.NO_INPUT)
    inp = normalize_input(raw_inputs[0])
    if inp is None:
        return ParseFailure(ParseReason.BAD_INPUT, raw_inputs[0][:80])
    return ParsedProposal(kind, program, (inp,))


def parse_solution(kind: TaskType, text: str) -> ParsedSolution | ParseFailure:
    """Read a solver's reply for task type ``kind``. Never raises."""
    if not isinstance(text, str):
        return ParseFailure(ParseReason.UNREADABLE, f"not a string: {type(text).__name__}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return _parse_solution(TaskType(kind), text)
    except Exception as e:  # a parser must be total; this is a bug net, not a code path
        return _parser_error(e)


def _parse_solution(kind: TaskType, text: str) -> ParsedSolution | ParseFailure:
    answer = extract_answer(text)
    if answer is None:
        return ParseFailure(ParseReason.NO_ANSWER_TAG)
    if not answer.strip():
        return ParseFailure(ParseReason.EMPTY_ANSWER)
    if kind is TaskType.INDUCTION:
        programs = _blocks(answer, "python")
        if not programs:
            return ParseFailure(ParseReason.NO_CODE_BLOCK)
        program = _clean_program(programs[0])
        return program if isinstance(program, ParseFailure) else ParsedSolution(kind, program)
    label = "output" if kind is TaskType.DEDUCTION else "input"
    blocks = fenced_blocks(answer)
    chosen = [body for lab, body in blocks if lab == label]
    if chosen:
        body = chosen[0].strip()
    elif not blocks:
        body = answer.strip()  # a bare answer
    else:
        missing = ParseReason.NO_OUTPUT if kind is TaskType.DEDUCTION else ParseReason.NO_INPUT
        return ParseFailure(missing, "no ```" + label + " block")
    if kind is TaskType.DEDUCTION:
        if not body:
            return ParseFailure(ParseReason.NO_OUTPUT)
        if not _check_literal(body):
            return ParseFailure(ParseReason.BAD_OUTPUT, body[:80])
        return ParsedSolution(kind, body)
    if not body:
        return ParseFailure(ParseReason.NO_INPUT)
    inp = normalize_input(body)
    if inp is None:
        return ParseFailure(ParseReason.BAD_INPUT, body[:80])
    return ParsedSolution(kind, inp)
