"""Output comparison for HumanEval+ / MBPP+, with the same semantics as the evalplus grader (v0.3.x).

A candidate's output for one input passes when it equals the expected output; for float-shaped expected values
(a float, or a non-empty list/tuple of floats) it may instead be within ``atol`` (``1e-6`` when the problem's
``atol`` is 0) plus a relative ``1e-7``, with the same type and length. A few problems have their own rule, keyed
by entry point as in evalplus: MBPP problems whose answer is a collection in any order compare as sets, three
regex problems only ask whether something (not None) was returned, two accept any answer or a zero, two compare
against a recomputed reference, and HumanEval/32 (``find_zero``) checks that the returned x is a root.
Inputs of some MBPP+ problems are stored as JSON lists but are tuples, sets or complex numbers in Python;
:func:`mbpp_inputs` restores them from the problem number, as evalplus does.
"""

from __future__ import annotations

import math
from typing import Any

SET_EQUAL = {
    "similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
    "larg_nnum", "intersection_array", "find_dissimilar", "Diff",
}  # fmt: skip
NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}

# MBPP+ problem numbers whose inputs need JSON lists turned back into tuples (layout -> problem numbers).
_TUPLE_ARGS = {2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740,
               744, 809}  # fmt: skip
_TUPLE_ITEMS_OF_ARGS = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
_TUPLE_ITEMS_OF_FIRST = {75, 413, 444, 753}
_SECOND_IS_TUPLE = {106, 750}
_FIRST_IS_TUPLE = {250, 405, 446, 617, 720, 763, 808}
_NESTED_THEN_TUPLE = {259, 401, 445}
_ALL_TUPLES = {580, 615, 791}


def _deep_tuple(value: Any) -> Any:
    return tuple(_deep_tuple(v) for v in value) if isinstance(value, list) else value


def mbpp_inputs(task_id: str, args: list[Any]) -> list[Any]:
    """The Python arguments of one MBPP+ input, restoring tuples, sets and complex numbers."""
    num = int(task_id.rsplit("/", 1)[-1])
    if num in _TUPLE_ARGS:
        return [tuple(a) for a in args]
    if num in _TUPLE_ITEMS_OF_ARGS:
        return [[tuple(x) for x in a] for a in args]
    if num in _TUPLE_ITEMS_OF_FIRST:
        return [[tuple(x) for x in args[0]], args[1]]
    if num in _SECOND_IS_TUPLE:
        return [args[0], tuple(args[1])]
    if num == 115:  # evalplus writes an empty member as {} (a dict); kept for identical expected outputs
        return [[set(x) if isinstance(x, list) and x else {} for x in args[0]]]
    if num == 124:
        return [float(args[0]), complex(args[1])]
    if num in _FIRST_IS_TUPLE:
        return [tuple(args[0]), *args[1:]]
    if num in _NESTED_THEN_TUPLE:
        return [tuple(tuple(x) for x in a) for a in args]
    if num == 278:
        return [tuple(tuple(x) if isinstance(x, list) else x for x in args[0])]
    if num == 307:
        return [tuple(args[0]), args[1], args[2]]
    if num == 722:
        return [{k: tuple(v) for k, v in args[0].items()}, *args[1:]]
    if num == 252:
        return [complex(args[0])]
    if num in _ALL_TUPLES:
        return [_deep_tuple(a) for a in args]
    return list(args)


def expected_for(entry: str, value: Any) -> Any:
    """What the canonical output is compared as: for the NOT_NONE problems, whether it returned something."""
    return value is not None if entry in NOT_NONE else value


def outputs_match(entry: str, args: list[Any], out: Any, exp: Any, atol: float) -> bool:
    """Whether candidate output ``out`` passes against expected ``exp`` for input ``args`` (module docstring)."""
    try:
        special = _special(entry, args, out, exp, atol)
        if special is not None:
            return special
        exact = _safe_eq(out, exp)
        if atol == 0 and _is_floats(exp):
            atol = 1e-6
        if exact or atol == 0:
            return exact
        return _close(out, exp, atol)
    except Exception:  # a hostile __eq__ or a type mix the oracle cannot handle is a failure
        return False


def _special(entry: str, args: list[Any], out: Any, exp: Any, atol: float) -> bool | None:
    if entry == "find_zero":
        return abs(_poly(args[0], out)) <= atol
    if entry == "are_equivalent":
        return True
    if entry == "sum_div":
        return _safe_eq(out, exp) or _safe_eq(out, 0)
    if entry in SET_EQUAL:
        return set(out) == set(exp)
    if entry in NOT_NONE:
        return out == exp if isinstance(out, bool) else exp == (out is not None)
    if entry == "surface_Area":
        return _safe_eq(out, exp) or abs(out - _surface_area(*args)) <= atol
    if entry == "digit_distance_nums":
        return _safe_eq(out, exp) or out == _digit_distance(*args)
    return None


def _safe_eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _is_floats(value: Any) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, float) for v in value)


def _close(out: Any, exp: Any, atol: float) -> bool:
    if type(out) is not type(exp):
        return False
    if isinstance(exp, list | tuple) and len(out) != len(exp):
        return False
    pairs = list(zip(out, exp, strict=True)) if isinstance(exp, list | tuple) else [(out, exp)]
    return all(_num_close(o, e, atol) for o, e in pairs)


def _num_close(o: Any, e: Any, atol: float) -> bool:
    o, e = float(o), float(e)
    if math.isinf(o) or math.isinf(e):
        return o == e
    return abs(o - e) <= atol + 1e-7 * abs(e)  # numpy.allclose(out, exp, rtol=1e-7, atol=atol)


def _poly(coefficients: list[float], x: float) -> float:
    return sum(c * math.pow(x, i) for i, c in enumerate(coefficients))


def _surface_area(base_edge: float, height: float) -> float:
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(a: int, b: int) -> int:
    left, right = str(a), str(b)
    width = max(len(left), len(right))
    return sum(abs(int(x) - int(y)) for x, y in zip(left.zfill(width), right.zfill(width), strict=True))
