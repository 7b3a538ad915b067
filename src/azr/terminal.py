"""What ``azr train`` and ``azr seed`` show and catch at the terminal: progress bars per phase, and Ctrl-C.

Ctrl-C between updates stops at once (the last checkpoint is exact); during an update, or always when several
processes train (a step left half-way on one rank would leave the others waiting), it stops after the step.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console

from azr.config import Config

__all__ = ["InterruptGuard", "Progress", "progress_bars"]


class InterruptGuard:
    """Ctrl-C raises KeyboardInterrupt between updates; during an update, or always with ``defer`` (several
    processes), it only asks to stop after the step."""

    def __init__(self, defer: bool = False) -> None:
        self.in_critical = False
        self.stop_requested = False
        self.defer = defer

    def _handler(self, signum: int, frame: Any) -> None:
        if self.in_critical or self.defer:
            self.stop_requested = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def critical(self) -> Iterator[None]:
        self.in_critical = True
        try:
            yield
        finally:
            self.in_critical = False


class Progress:
    """Rich progress bars, one per phase, reused across steps; a no-op when progress is off."""

    def __init__(self, enabled: bool, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bars = (
            Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            if enabled
            else None
        )
        self.tasks: dict[str, Any] = {}

    def callback(self, phase: str, done: int, total: int) -> None:
        if self.bars is None:
            return
        key = phase.split(" (")[0]
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(phase, total=total)
        self.bars.update(self.tasks[key], description=phase, completed=done, total=total)


@contextmanager
def progress_bars(cfg: Config, console: Console) -> Iterator[Progress]:
    """Progress bars for a run: shown when ``logging.progress`` is on and the console is a terminal."""
    p = Progress(cfg.logging.progress and console.is_terminal, console)
    if p.bars is None:
        yield p
        return
    with p.bars:
        yield p
