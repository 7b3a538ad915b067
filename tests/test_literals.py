"""Model answers are parsed without eval, and compared with documented equality rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from azr.executor import literals_equal, parse_arguments, parse_literal, values_equal


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("[1, (2, 'a')]", [1, (2, "a")]),
        ("{'k': 1.5}", {"k": 1.5}),
        ("{1, 2}", {1, 2}),
        ("set()", set()),
        ("frozenset({1})", frozenset({1})),
        ("((1,), ((2,),))", ((1,), ((2,),))),
        ("-inf", -math.inf),
        ("float('inf')", math.inf),
        ("None", None),
        ("-3", -3),
        ("1+2j", 1 + 2j),
        ("b'x'", b"x"),
        ("  'Hello world'  ", "Hello world"),
    ],
)
def test_parse_accepts_literals(text: str, value: object) -> None:
    ok, got = parse_literal(text)
    assert ok and got == value and type(got) is type(value)


def test_parse_nan() -> None:
    ok, got = parse_literal("nan")
    assert ok and math.isnan(got)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "[x for x in range(3)]",
        "(1).__class__",
        "f(1)",
        "{**{}}",
        "a",
        "1 +",
        "lambda: 1",
        "float('1e5')",
        "'a' * 10",
        "[" * 500 + "]" * 500,
    ],
)
def test_parse_rejects_code(text: str) -> None:
    assert parse_literal(text) == (False, None)


def test_parse_size_limit() -> None:
    big = "[" + ", ".join(["1"] * 50_000) + "]"
    assert parse_literal(big, max_chars=1000) == (False, None)
    assert parse_literal(big)[0] is False  # over the default 100,000 characters


def test_parse_arguments() -> None:
    assert parse_arguments("1, [2, 3], key='a'") == (True, (1, [2, 3]), {"key": "a"})
    assert parse_arguments("")[0] is True
    assert parse_arguments("x")[0] is False
    assert parse_arguments("1), print(2")[0] is False
    assert parse_arguments("*[1]")[0] is False


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("1", "1.0", True),  # numbers by value
        ("True", "1", False),  # bool is its own type
        ("nan", "float('nan')", True),  # nan predicts nan
        ("-0.0", "0.0", True),  # Python ==
        ("0.1 + 0.2", "0.3", False),  # not a literal
        ("0.30000000000000004", "0.3", False),  # no float tolerance
        ("[1]", "(1,)", False),
        ("{1, 2}", "frozenset({2, 1})", True),
        ("{1: 'a', 2: 'b'}", "{2: 'b', 1: 'a'}", True),
        ("[1, [2, nan]]", "[1.0, [2, nan]]", True),
        ("'a'", '"a"', True),
        ("garbage(", "garbage(", True),  # identical text
        ("garbage(", "garbage( ", True),
        ("garbage(", "1", False),
    ],
)
def test_literals_equal_semantics(a: str, b: str, equal: bool) -> None:
    assert literals_equal(a, b) is equal
    assert literals_equal(b, a) is equal


def test_rigged_eq_is_never_equal() -> None:
    class Always:
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    assert not values_equal(Always(), 1)
    assert not values_equal([Always()], [1])
    assert not values_equal({1: Always()}, {1: 2})


literals = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(st.integers(), inner)
    ),
    max_leaves=10,
)


@given(literals)
def test_repr_round_trips(value: object) -> None:
    """Every literal value's repr parses back to an equal value (the gold outputs are reprs)."""
    ok, back = parse_literal(repr(value))
    assert ok and values_equal(back, value)
    assert literals_equal(repr(value), repr(back))
