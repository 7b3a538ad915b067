"""Parsing model-written literals without eval, and the equality used to compare results.

This module imports only the standard library: the sandbox worker loads it too, so that a result can be compared
with a gold value inside the sandboxed child, with exactly the same rules as in the trainer.

Accepted literal syntax (:func:`parse_literal`): what ``ast.literal_eval`` accepts (numbers, strings, bytes,
``True``/``False``/``None``, tuples, lists, dicts, sets, ``1+2j``), plus the spellings that ``repr`` produces but
``literal_eval`` refuses: ``inf``, ``-inf``, ``nan``, ``set()``, ``frozenset({...})``, and ``float('inf')``-style
calls. Nothing is ever evaluated: the text is parsed with :mod:`ast` and the tree is walked, with a limit on the
text length, the node count and the nesting depth.

Equality (:func:`values_equal`, :func:`literals_equal`) is Python ``==`` restricted to literal types, with these
documented choices:

- ``1 == 1.0`` is **equal** (numbers compare by value, as in Python and in the reference implementation);
- ``True`` vs ``1`` is **not equal** (``bool`` is compared as its own type, so ``True`` is not an answer to ``1``);
- ``nan`` equals ``nan`` (a program that returns nan is predicted by answering nan);
- ``-0.0 == 0.0`` is **equal** (Python ``==``);
- floats are compared **exactly**, with no tolerance (outputs come from a deterministic program);
- ``[1]`` vs ``(1,)`` is **not equal**; ``set`` vs ``frozenset`` with the same items is equal; dict order is ignored;
- any value whose exact type is not a literal type is never equal to anything (this stops objects with a rigged
  ``__eq__``); compare such values by their ``repr`` text instead.
"""

import ast
import math

MAX_LITERAL_CHARS = 100_000
_MAX_NODES = 200_000
_MAX_DEPTH = 100
_SPECIAL_NAMES = {"inf": math.inf, "nan": math.nan}
_FLOAT_WORDS = {"inf", "-inf", "+inf", "nan", "infinity", "-infinity", "+infinity"}
_NUMBER_TYPES = (int, float, complex)
_SCALAR_TYPES = {type(None), bool, int, float, complex, str, bytes}


class _Reject(Exception):
    """The text is not an accepted literal."""


class _Walker:
    def __init__(self) -> None:
        self.nodes = 0

    def convert(self, node: ast.AST, depth: int = 0) -> object:
        self.nodes += 1
        if self.nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise _Reject("literal too large or too deep")
        d = depth + 1
        if isinstance(node, ast.Constant) and node.value is not Ellipsis:
            return node.value
        if isinstance(node, ast.Tuple):
            return tuple(self.convert(e, d) for e in node.elts)
        if isinstance(node, ast.List):
            return [self.convert(e, d) for e in node.elts]
        if isinstance(node, ast.Set):
            return {self.convert(e, d) for e in node.elts}
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _Reject("** in a dict literal")
            return {
                self.convert(k, d): self.convert(v, d) for k, v in zip(node.keys, node.values, strict=True)
            }
        if isinstance(node, ast.Name) and node.id in _SPECIAL_NAMES:
            return _SPECIAL_NAMES[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return self._unary(node, d)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            return self._complex(node, d)
        if isinstance(node, ast.Call):
            return self._call(node, d)
        raise _Reject(f"not a literal: {type(node).__name__}")

    def _unary(self, node: ast.UnaryOp, depth: int) -> object:
        value = self.convert(node.operand, depth)
        if type(value) not in _NUMBER_TYPES:
            raise _Reject("sign on a non-number")
        return -value if isinstance(node.op, ast.USub) else +value  # type: ignore[operator]

    def _complex(self, node: ast.BinOp, depth: int) -> object:
        left, right = self.convert(node.left, depth), self.convert(node.right, depth)
        if type(left) not in (int, float) or type(right) is not complex:
            raise _Reject("only real +/- imaginary is accepted")
        return left + right if isinstance(node.op, ast.Add) else left - right

    def _call(self, node: ast.Call, depth: int) -> object:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        if node.keywords or len(node.args) > 1 or name not in ("set", "frozenset", "float"):
            raise _Reject("only set(), frozenset(...) and float('inf'/'nan') calls are accepted")
        if not node.args:
            if name == "float":
                return 0.0
            return set() if name == "set" else frozenset()
        arg = self.convert(node.args[0], depth)
        if name == "float":
            if not isinstance(arg, str) or arg.strip().lower() not in _FLOAT_WORDS:
                raise _Reject("float() accepts only inf/nan words")
            return float(arg)
        if not isinstance(arg, list | tuple | set | frozenset | str):
            raise _Reject("set()/frozenset() of a non-iterable literal")
        return set(arg) if name == "set" else frozenset(arg)


def parse_literal(text: str, max_chars: int = MAX_LITERAL_CHARS) -> tuple[bool, object]:
    """Parse one Python literal written by a model, never evaluating it.

    Returns ``(True, value)`` or ``(False, None)``; never raises. Example: ``parse_literal("[1, (2, 'a'), -inf]")``
    gives ``(True, [1, (2, 'a'), -inf])``; ``parse_literal("__import__('os')")`` gives ``(False, None)``.
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return False, None
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return True, _Walker().convert(tree.body)
    except (_Reject, SyntaxError, ValueError, TypeError, MemoryError, RecursionError, OverflowError):
        return False, None


def parse_arguments(text: str, max_chars: int = MAX_LITERAL_CHARS) -> tuple[bool, tuple, dict]:
    """Parse call arguments (``"1, [2, 3], key='a'"``) whose values are all literals, never evaluating them.

    Returns ``(ok, args, kwargs)``; never raises.
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return False, (), {}
    try:
        call = ast.parse(f"_({text}\n)", mode="eval").body
        if not isinstance(call, ast.Call) or any(k.arg is None for k in call.keywords):
            return False, (), {}
        if any(isinstance(a, ast.Starred) for a in call.args):
            return False, (), {}
        walker = _Walker()
        args = tuple(walker.convert(a) for a in call.args)
        kwargs = {k.arg: walker.convert(k.value) for k in call.keywords if k.arg is not None}
        return True, args, kwargs
    except (_Reject, SyntaxError, ValueError, TypeError, MemoryError, RecursionError, OverflowError):
        return False, (), {}


def values_equal(a: object, b: object, _depth: int = 0) -> bool:
    """The documented equality of two literal values (see the module docstring for the rules)."""
    if _depth > _MAX_DEPTH:
        return False
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in _NUMBER_TYPES and tb in _NUMBER_TYPES:
        if ta is float and tb is float and math.isnan(a) and math.isnan(b):  # type: ignore[arg-type]
            return True
        return a == b
    if ta in (list, tuple) or tb in (list, tuple):
        return (
            ta is tb
            and len(a) == len(b)
            and all(  # type: ignore[arg-type]
                values_equal(x, y, _depth + 1)
                for x, y in zip(a, b, strict=True)  # type: ignore[call-overload]
            )
        )
    if ta is dict and tb is dict:
        return a.keys() == b.keys() and all(values_equal(v, b[k], _depth + 1) for k, v in a.items())  # type: ignore[attr-defined,index]
    if ta in (set, frozenset) and tb in (set, frozenset):
        return _all_literal(a) and _all_literal(b) and a == b
    return ta in _SCALAR_TYPES and ta is tb and a == b


def _all_literal(items: object) -> bool:
    return all(type(x) in _SCALAR_TYPES or type(x) in (tuple, frozenset) for x in items)  # type: ignore[attr-defined]


def literals_equal(a_text: str, b_text: str) -> bool:
    """Whether two literal texts denote equal values (the rule used for deduction rewards).

    Identical texts (after stripping whitespace) are equal; otherwise both must parse with :func:`parse_literal` and
    compare equal under :func:`values_equal`. ``literals_equal("1", "1.0")`` is True, ``("True", "1")`` is False,
    ``("nan", "float('nan')")`` is True, ``("[1]", "(1,)")`` is False, ``("{1: 'a', 2: 'b'}", "{2: 'b', 1: 'a'}")``
    is True; unparsable text is never equal to anything but the identical text.
    """
    if not isinstance(a_text, str) or not isinstance(b_text, str):
        return False
    if a_text.strip() == b_text.strip():
        return True
    ok_a, a = parse_literal(a_text)
    ok_b, b = parse_literal(b_text)
    return ok_a and ok_b and values_equal(a, b)
