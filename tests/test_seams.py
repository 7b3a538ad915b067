"""The concrete sandbox and task stores satisfy the Protocols of :mod:`azr.seams`.

Checked twice: statically (this file is in mypy's ``files``, so :func:`_conforms` fails the type check when a
signature drifts) and at run time (every Protocol method exists with the same parameter names).
"""

from __future__ import annotations

import inspect

import pytest

from azr.distributed import SharedStore
from azr.executor import Executor
from azr.seams import ExecutorLike, TaskStoreLike
from azr.store import TaskStore


def _conforms(
    executor: Executor, store: TaskStore, shared: SharedStore
) -> tuple[ExecutorLike, TaskStoreLike, TaskStoreLike]:
    return executor, store, shared  # mypy: each argument is assignable to its Protocol


def _members(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]


@pytest.mark.parametrize(
    ("protocol", "concrete"),
    [(ExecutorLike, Executor), (TaskStoreLike, TaskStore), (TaskStoreLike, SharedStore)],
)
def test_concrete_classes_have_every_protocol_method(protocol: type, concrete: type) -> None:
    members = _members(protocol)
    assert members, "the Protocol lists no method"
    for name in members:
        want = list(inspect.signature(getattr(protocol, name)).parameters)
        got = list(inspect.signature(getattr(concrete, name)).parameters)
        assert got == want, f"{concrete.__name__}.{name}{got} differs from {protocol.__name__}'s {want}"
