"""A tiny in-process stand-in for ``azr.executor.Executor`` with the same surface, for task-layer tests.

It runs only the trusted programs written in these tests, with ``exec`` and no isolation. It mimics the statuses
the real executor reports (OK, ERROR, REJECTED, NONDETERMINISTIC, OUTPUT_TOO_LARGE, WRONG) so the validation logic
can be tested before and independently of the sandbox.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from enum import Enum


class FakeStatus(Enum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    NONDETERMINISTIC = "nondeterministic"
    OUTPUT_TOO_LARGE = "output_too_large"
    WRONG = "wrong"


@dataclass(frozen=True)
class FakeResult:
    status: FakeStatus
    value: str | None = None
    error_type: str | None = None
    message: str = ""
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is FakeStatus.OK


class FakeExecutor:
    """``validate_many`` runs each call twice in fresh namespaces; ``import random`` is the static-check ban."""

    def __init__(self, max_output_chars: int = 10_000) -> None:
        self.max_output_chars = max_output_chars
        self.calls: list[str] = []

    def _run(self, program: str, inp: str) -> FakeResult:
        if "import random" in program or "open(" in program:
            return FakeResult(FakeStatus.REJECTED, message="banned")
        ns: dict = {}
        try:
            exec(program, ns)
            value = repr(eval(f"f({inp})", ns))
        except Exception as e:
            return FakeResult(FakeStatus.ERROR, error_type=type(e).__name__, message=str(e))
        if len(value) > self.max_output_chars:
            return FakeResult(FakeStatus.OUTPUT_TOO_LARGE)
        return FakeResult(FakeStatus.OK, value)

    def validate_many(self, calls):
        self.calls.append("validate_many")
        out = []
        for program, inp in calls:
            a, b = self._run(program, inp), self._run(program, inp)
            if a.ok and b.ok and a.value != b.value:
                a = FakeResult(FakeStatus.NONDETERMINISTIC)
            out.append(a)
        return out

    def check_abduction_many(self, batch):
        self.calls.append("check_abduction_many")
        out = []
        for program, candidate, gold in batch:
            r = self._run(program, candidate)
            same = r.ok and literal_eq(r.value, gold)
            out.append(r if not r.ok else FakeResult(FakeStatus.OK if same else FakeStatus.WRONG, r.value))
        return out

    def check_induction_many(self, batch):
        self.calls.append("check_induction_many")
        out = []
        for program, inputs, outputs in batch:
            rs = [self._run(program, i) for i in inputs]
            good = all(r.ok and literal_eq(r.value, o) for r, o in zip(rs, outputs, strict=True))
            out.append(FakeResult(FakeStatus.OK if good else FakeStatus.WRONG))
        return out


def literal_eq(a: str, b: str) -> bool:
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except Exception:
        return a.strip() == b.strip()
