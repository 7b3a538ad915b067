"""Typed results of sandboxed runs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """Outcome of one run or check. Never grep messages: branch on this."""

    OK = "ok"  # ran; for a check, it passed
    ERROR = "error"  # raised an exception (``error_type`` names it) or crashed
    TIMEOUT = "timeout"  # over the wall-clock or CPU-time limit
    MEMORY = "memory"  # over the address-space limit
    OUTPUT_TOO_LARGE = "output_too_large"  # result repr or printed output over the cap (never truncated)
    REJECTED = "rejected"  # refused before running (static check, size limits, non-literal answer)
    NONDETERMINISTIC = "nondeterministic"  # separate runs gave different results
    WRONG = "wrong"  # a check ran but its answer did not match


@dataclass(frozen=True)
class ExecResult:
    """One typed result. ``value`` is ``repr`` of the returned value when the run succeeded."""

    status: Status
    value: str | None = None
    error_type: str | None = None
    message: str = ""
    duration_s: float = 0.0
    stdout: str = ""  # captured stdout+stderr of the child, capped at max_output_chars

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (the ``azr sandbox run`` output)."""
        return {
            "status": self.status.value,
            "value": self.value,
            "error_type": self.error_type,
            "message": self.message,
            "duration_s": round(self.duration_s, 6),
            "stdout": self.stdout,
        }


def rejected(reason: str) -> ExecResult:
    return ExecResult(Status.REJECTED, message=reason)


def from_row(row: list) -> ExecResult:
    """Build a result from a worker's raw row ``[status, value, error_type, message, seconds, stdout]``."""
    try:
        status, value, etype, message, dt, stdout = row
        return ExecResult(Status(status), value, etype, str(message), float(dt), str(stdout))
    except (ValueError, TypeError):
        return ExecResult(
            Status.ERROR, error_type="SandboxError", message="malformed result from the sandbox"
        )
