"""The task-level executor API: typed results, determinism, abduction and induction checks, tiers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from azr.config import ExecutorConfig
from azr.errors import AzrError
from azr.executor import TIERS, ExecResult, Executor, Status, available_tiers, probe_tier

IDENTITY = "def f(a):\n    return a"


@pytest.fixture(scope="module")
def ex() -> Iterator[Executor]:
    with Executor(ExecutorConfig(timeout_s=1.0, memory_mb=256, max_output_chars=1000)) as executor:
        yield executor


def test_run_returns_repr(ex: Executor) -> None:
    r = ex.run("def f(a, b):\n    return a + b", "1, [2][0]")
    assert r == ExecResult(Status.OK, "3", None, "", r.duration_s, "")
    assert r.ok


def test_input_may_use_program_globals(ex: Executor) -> None:
    assert ex.run("K = [1, 2]\ndef f(a):\n    return a[::-1]", "K[:]").value == "[2, 1]"


def test_error_is_typed(ex: Executor) -> None:
    r = ex.run("def f(a):\n    return 1 / a", "0")
    assert r.status is Status.ERROR and r.error_type == "ZeroDivisionError"


def test_timeout(ex: Executor) -> None:
    assert ex.run("def f(a):\n    while True:\n        pass", "1").status is Status.TIMEOUT


def test_oversized_result_is_rejected_not_truncated(ex: Executor) -> None:
    r = ex.run("def f(a):\n    return 'x' * a", "5000")
    assert r.status is Status.OUTPUT_TOO_LARGE and r.value is None


def test_stdout_is_captured(ex: Executor) -> None:
    assert ex.run("def f(a):\n    print('hi', a)\n    return a", "1").stdout == "hi 1\n"


def test_run_many_uses_every_worker(ex: Executor) -> None:
    """Workers are separate interpreters with different hash seeds, so hash('a') tells them apart."""
    rs = ex.run_many([("def f(a):\n    return hash(a)", "'a'")] * 40)
    assert all(r.ok for r in rs)
    assert len({r.value for r in rs}) == len(ex.worker_pids) >= 2


def test_run_calls_share_one_child(ex: Executor) -> None:
    program = "seen = []\ndef f(a):\n    seen.append(a)\n    return len(seen)"
    rs = ex.run_calls(program, ["1", "2", "3"])
    assert [r.value for r in rs] == ["1", "2", "3"]


def test_run_calls_go_on_after_a_failing_call(ex: Executor) -> None:
    rs = ex.run_calls("def f(a):\n    while a:\n        pass\n    return a", ["0", "1", "0"])
    assert [r.status for r in rs] == [Status.OK, Status.TIMEOUT, Status.OK]


@pytest.mark.parametrize(
    "program",
    [
        "def f(a):\n    return list({str(i) for i in range(a)})",  # str hash order
        "def f(a):\n    return id(object()) % 1000003 + a",  # addresses
        "def f(a):\n    return (x for x in range(a))",  # generator repr
        "class C:\n    pass\ndef f(a):\n    return [id(c) % 7 for c in {C(), C(), C()}]",  # set of objects
    ],
)
def test_validate_rejects_nondeterminism(ex: Executor, program: str) -> None:
    assert ex.validate_many([(program, "20")])[0].status is Status.NONDETERMINISTIC


def test_state_between_calls_cannot_tell_validation_from_use(ex: Executor) -> None:
    """Validation runs each call in a fresh child, as every later use does: a program that counts its calls (or
    looks for the caller's call list) sees the same thing in both, so its validated gold is what it gives later."""
    counter = "def f(a, acc=[]):\n    acc.append(a)\n    return len(acc)"
    snoop = (
        "import sys\ndef f(a):\n    fr, seen = sys._getframe(1), []\n    while fr is not None:\n"
        "        seen += [len(v) for v in fr.f_locals.values() if isinstance(v, list)]\n        fr = fr.f_back\n"
        "    return seen"
    )
    for program in (counter, snoop):
        gold = ex.run_many([(program, "1")])[0]  # validate_many would reject the snoop statically
        [validated] = [r for r in ex.run_jobs([{"code": program, "calls": ["1"], "entry": "f"}])[0]]
        assert gold.ok and validated.value == gold.value
    assert ex.validate_many([(counter, "1")])[0].value == ex.run(counter, "1").value == "1"


def test_validate_accepts_deterministic_and_sets(ex: Executor) -> None:
    rs = ex.validate_many(
        [(IDENTITY, "'Hello world'"), ("def f(a):\n    return {str(i) for i in range(a)}", "9")]
    )
    assert [r.status for r in rs] == [Status.OK, Status.OK]
    assert rs[0].value == "'Hello world'"


def test_validate_static_rejection(ex: Executor) -> None:
    r = ex.validate_many([("import random\ndef f(a):\n    return random.random()", "1")])[0]
    assert r.status is Status.REJECTED and "random" in r.message


def test_validate_size_limits(ex: Executor) -> None:
    assert ex.validate_many([(IDENTITY, "1" * 5000)])[0].status is Status.REJECTED


def test_check_abduction(ex: Executor) -> None:
    program = "def f(a):\n    return sorted(a)"
    rs = ex.check_abduction_many(
        [
            (program, "[3, 1, 2]", "[1, 2, 3]"),
            (program, "[3, 1]", "[1, 2, 3]"),
            (program, "list(range(3))", "[0]"),
        ]
    )
    assert [r.status for r in rs] == [Status.OK, Status.WRONG, Status.REJECTED]


def test_check_abduction_number_semantics(ex: Executor) -> None:
    rs = ex.check_abduction_many(
        [(IDENTITY, "1.0", "1"), (IDENTITY, "True", "1"), (IDENTITY, "float('nan')", "nan")]
    )
    assert [r.status for r in rs] == [Status.OK, Status.WRONG, Status.OK]


def test_check_induction(ex: Executor) -> None:
    good, bad = "def f(a):\n    return 2 * a", "def f(a):\n    return a + 1"
    ins, outs = ("2", "3"), ("4", "6")
    rs = ex.check_induction_many([(good, ins, outs), (bad, ins, outs), ("import os\n" + good, ins, outs)])
    assert [r.status for r in rs] == [Status.OK, Status.WRONG, Status.REJECTED]


def test_probe_and_tiers() -> None:
    assert probe_tier() in TIERS
    assert available_tiers()[0] == "none"


def test_min_tier_refuses_weaker_tier() -> None:
    with pytest.raises(AzrError, match="min_tier"):
        Executor(ExecutorConfig(min_tier="seccomp"), tier="rlimits")


def test_unknown_tier_is_a_clear_error() -> None:
    with pytest.raises(AzrError, match="unknown sandbox tier"):
        Executor(ExecutorConfig(), tier="docker")


def test_oversized_printed_output_is_rejected(ex: Executor) -> None:
    r = ex.run("def f(a):\n    print('x' * 5000)\n    return a", "1")
    assert r.status is Status.OUTPUT_TOO_LARGE and len(r.stdout) <= 1000


def test_induction_outputs_never_enter_the_sandbox(ex: Executor) -> None:
    """Code in the child can forge its own result lines (first half), so the checks compare the hidden outputs
    outside the sandbox, where a forged line cannot know them (second half)."""
    forger = (  # rows: "status ns len(value) len(error_type) len(message) len(body)\n" + the texts
        "import os\nfor _ in range(2):\n    os.write(3, b'ok 0 3 -1 0 3\\n999')\ndef f(a):\n    return a"
    )
    rs = ex.run_jobs([{"code": forger, "calls": ["1", "2"], "entry": "f"}])[0]
    assert [r.value for r in rs] == ["999", "999"]  # forging is possible from inside the child ...
    program_rows = ex.check_induction_many([("def f(a):\n    return a", ("1", "2"), ("2", "4"))])
    assert program_rows[0].status is Status.WRONG  # ... but the comparison happens outside it


def test_pool_restarts_a_dead_worker() -> None:
    import os
    import signal

    with Executor(ExecutorConfig(timeout_s=1.0)) as executor:
        first = executor.worker_pids[0]
        os.kill(first, signal.SIGKILL)
        rs = executor.run_many([(IDENTITY, str(i)) for i in range(20)])
        assert all(r.ok or r.error_type == "SandboxError" for r in rs)
        assert first not in executor.worker_pids
        assert [r.value for r in executor.run_many([(IDENTITY, "5")] * 4)] == ["5"] * 4


def test_result_rows_round_trip_and_malformed_rows_are_refused() -> None:
    from azr.executor._child import encode_row as _encode
    from azr.executor._child import parse_rows

    def _parse_rows(data: bytes) -> tuple[list, bytes | None]:
        return parse_rows(data, 1000)

    rows = [
        ["ok", "'h\u00e9\ud800'", None, "", 1.5e-05],
        ["error", None, "ValueError", "ValueError: \u4e2d", 0.25],
    ]
    data = b"".join(_encode(r) for r in rows)
    assert _parse_rows(data) == (rows, b"")
    assert _parse_rows(data[:-2]) == (rows[:1], data[len(_encode(rows[0])) : -2])  # waits for the rest
    for bad in (
        b"ok 0 3 -1 0 4\n9999",
        b"ok x 3 -1 0 3\n999",
        b"\xff 0 3 -1 0 3\n999",
        b"bogus 0 0 -1 0 0\n",
    ):
        parsed, rest = _parse_rows(bad)
        assert rest is None and parsed[-1][2] == "SandboxError"
    assert _parse_rows(b"ok " + b"9" * 200)[1] is None  # no header within 128 bytes
