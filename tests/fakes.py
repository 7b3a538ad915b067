"""A tiny in-process stand-in for ``azr.executor.Executor`` with the same surface, for task-layer tests.

It runs only the trusted programs written in these tests, with ``exec`` and no isolation, and returns the real
executor's result type (``ExecResult``) with the statuses the sandbox reports (OK, ERROR, REJECTED,
NONDETERMINISTIC, OUTPUT_TOO_LARGE, WRONG), so the validation logic is tested without the sandbox.
"""

from __future__ import annotations

import ast

from azr.executor import ExecResult, Status


class FakeExecutor:
    """``validate_many`` runs each call twice in fresh namespaces; ``import random`` is the static-check ban."""

    def __init__(self, max_output_chars: int = 10_000) -> None:
        self.max_output_chars = max_output_chars
        self.calls: list[str] = []

    def _run(self, program: str, inp: str) -> ExecResult:
        if "import random" in program or "open(" in program:
            return ExecResult(Status.REJECTED, message="banned")
        ns: dict = {}
        try:
            exec(program, ns)
            value = repr(eval(f"f({inp})", ns))
        except Exception as e:
            return ExecResult(Status.ERROR, error_type=type(e).__name__, message=str(e))
        if len(value) > self.max_output_chars:
            return ExecResult(Status.OUTPUT_TOO_LARGE)
        return ExecResult(Status.OK, value)

    def validate_many(self, calls):
        self.calls.append("validate_many")
        out = []
        for program, inp in calls:
            a, b = self._run(program, inp), self._run(program, inp)
            if a.ok and b.ok and a.value != b.value:
                a = ExecResult(Status.NONDETERMINISTIC)
            out.append(a)
        return out

    def check_abduction_many(self, batch):
        self.calls.append("check_abduction_many")
        out = []
        for program, candidate, gold in batch:
            r = self._run(program, candidate)
            same = r.ok and literal_eq(r.value, gold)
            out.append(r if not r.ok else ExecResult(Status.OK if same else Status.WRONG, r.value))
        return out

    def check_induction_many(self, batch):
        self.calls.append("check_induction_many")
        out = []
        for program, inputs, outputs in batch:
            rs = [self._run(program, i) for i in inputs]
            good = all(r.ok and literal_eq(r.value, o) for r, o in zip(rs, outputs, strict=True))
            out.append(ExecResult(Status.OK if good else Status.WRONG))
        return out


def literal_eq(a: str, b: str) -> bool:
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except Exception:
        return a.strip() == b.strip()
