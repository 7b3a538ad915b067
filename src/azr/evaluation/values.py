"""Python values as text and back, for the code benchmarks.

Inputs travel to the sandbox as argument text (what goes between the parentheses of ``f(...)``) and results come
back as ``repr`` text. :func:`to_source` writes values the way ``repr`` does, except that the non-finite floats
become ``float('inf')`` / ``float('nan')`` so the text stays valid Python; :func:`parse_value` reads ``repr`` text
back without ``eval``: literals plus ``inf``, ``nan``, ``set()``, ``frozenset(...)`` and ``float('...')``.
"""

from __future__ import annotations

import ast
import math
from typing import Any

_NAMES = {"True": True, "False": False, "None": None, "inf": math.inf, "nan": math.nan}


def to_source(value: Any) -> str:
    """Python source text that evaluates to ``value`` (containers recursively; other objects by ``repr``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if isinstance(value, list):
        return "[" + ", ".join(to_source(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(to_source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{to_source(k)}: {to_source(v)}" for k, v in value.items()) + "}"
    if isinstance(value, set | frozenset) and value:
        inner = "{" + ", ".join(to_source(v) for v in value) + "}"
        return inner if isinstance(value, set) else f"frozenset({inner})"
    return repr(value)


def call_args(args: list[Any] | tuple[Any, ...]) -> str:
    """Argument text for ``f(*args)``: ``[1, [2]] -> "1, [2]"``."""
    return ", ".join(to_source(a) for a in args)


def parse_value(text: str) -> tuple[bool, Any]:
    """``(True, value)`` for ``repr`` text of literals (see the module docstring), else ``(False, None)``."""
    try:
        return True, _build(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return False, None


def _build(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = [_build(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {_build(k): _build(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _build(node.operand)
        _need_number(operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):  # complex: (1+2j), (-0-1j)
        left, right = _build(node.left), _build(node.right)
        _need_number(left)
        _need_number(right)
        return left + right if isinstance(node.op, ast.Add) else left - right
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        return _call(node.func.id, [_build(a) for a in node.args])
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


def _call(name: str, args: list[Any]) -> Any:
    if name in ("set", "frozenset") and len(args) <= 1:
        return (set if name == "set" else frozenset)(*args)
    if name == "float" and len(args) == 1 and isinstance(args[0], str):
        return float(args[0])
    raise ValueError(f"call of {name} is not a literal")


def _need_number(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | complex):
        raise ValueError("arithmetic on a non-number")
