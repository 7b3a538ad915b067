"""The static pre-check: defence in depth in front of the sandbox."""

from __future__ import annotations

import pytest

from azr.executor import static_check

OK_PROGRAMS = [
    "def f(a):\n    return a",
    "import math\nfrom collections import Counter\ndef f(x):\n    return Counter(x), math.pi",
    "def f(input):\n    return input",  # a parameter may shadow a banned builtin
    "def f(x):\n    open = len\n    return open(x)",
    "def f(x):\n    return getattr(x, 'real')",
    "def f(x):\n    return type(x).__name__",
]

BAD_PROGRAMS = {
    "import os\ndef f(x):\n    return x": "banned import: os",
    "import os.path\ndef f(x):\n    return x": "banned import",
    "from random import randint\ndef f(x):\n    return x": "banned import: random",
    "def f(x):\n    import time\n    return time.time()": "banned import: time",
    "def f(x):\n    return __import__('os')": "banned name: __import__",
    "def f(x):\n    return eval(x)": "banned name: eval",
    "def f(x):\n    exec(x)": "banned name: exec",
    "def f(x):\n    return open(x).read()": "banned name: open",
    "def f(x, o=open):\n    return o(x)": "banned name: open",  # the default runs in the module scope
    "def f(x):\n    return compile(x, 'a', 'exec')": "banned name: compile",
    "def f(x):\n    return input()": "banned name: input",
    "def f(x):\n    return ().__class__.__bases__[0].__subclasses__()": "banned attribute",
    "def f(x):\n    return f.__globals__": "banned attribute: __globals__",
    "def f(x):\n    return f.__code__": "banned attribute: __code__",
    "def f(x):\n    return __builtins__": "banned name: __builtins__",
    "def f(x):\n    return getattr(x, '__class__')": "getattr",
    "def f(x):\n    return getattr(x, x)": "getattr",
    # frames reached from an exception or by non-dunder attribute names (the fork server's globals before)
    "def f(x):\n    try:\n        1 / 0\n    except Exception as e:\n        return e.__traceback__": "__traceback__",
    "def f(x):\n    return getattr(x, 'tb_frame')": "getattr",
    "def f(x):\n    return getattr(getattr(x, 'gi_frame'), 'f_back')": "getattr",
    "def f(x):\n    return getattr(x, 'f_globals')": "getattr",
    "def f(x):\n    return getattr(x, 'f_locals')": "getattr",
    # attribute names hidden in data: getattr passed around, attrgetter, str.format's field lookup
    "from functools import reduce\ndef f(x):\n    return reduce(getattr, ['a'], x)": "direct call",
    "def f(x):\n    g = getattr\n    return g(x, 'a')": "direct call",
    "from operator import attrgetter\ndef f(x):\n    return attrgetter('a')(x)": "attrgetter",
    "import operator\ndef f(x):\n    return operator.methodcaller('a')(x)": "methodcaller",
    "import string\ndef f(x):\n    return string.Formatter().get_field('0.a', [x], {})": "get_field",
    "def g(x):\n    return x": "no top-level function 'f'",
    "def f(x):\n    return (": "syntax error",
}


@pytest.mark.parametrize("program", OK_PROGRAMS)
def test_accepts(program: str) -> None:
    assert static_check(program) is None


@pytest.mark.parametrize(("program", "reason"), BAD_PROGRAMS.items())
def test_rejects(program: str, reason: str) -> None:
    got = static_check(program)
    assert got is not None and reason in got


def test_length_limit() -> None:
    assert "longer" in (static_check("def f(x):\n    return x\n" + "#" * 5000) or "")
