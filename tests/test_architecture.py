"""The shape of the package, read from the source (nothing is imported or run).

- the import graph of ``azr`` has no cycle, counting every import: module level, inside functions and under
  ``TYPE_CHECKING``;
- dependencies point one way: rollout and self-play never reach training; ``azr.algo`` imports nothing of azr
  outside itself and, of other packages, only torch;
- modules stay within :data:`MAX_MODULE_LINES` lines and functions within :data:`MAX_FUNCTION_LINES`, except the
  listed ones, each with its reason and a cap it may not grow past;
- every module is in the README's file tree, and every file in the tree exists.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
MODULE_EXCEPTIONS = {
    # One class: the policy update's state and its step. What could leave it has left (batching, layerwise,
    # forward, lm_head, model_setup, sharding); what remains is the step's phases on the trainer's own state.
    "azr/training/trainer.py": 470,
}
FUNCTION_EXCEPTIONS: dict[str, int] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted((SRC / "azr").rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from (relative imports included)."""
    if not node.level:
        return node.module or ""
    package = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> set[str]:
    """Every azr module ``name`` imports, wherever the import stands; a name imported from a package counts as the
    submodule it is, else as the package."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(name, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in MODULES else source)
    return {m for m in found if m in MODULES and m != name}


def third_party(name: str) -> set[str]:
    """Top-level names of the non-azr packages ``name`` imports (the standard library left out)."""
    tops: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            tops.add(node.module.split(".")[0])
    return {t for t in tops if t != "azr" and t not in sys.stdlib_module_names and t != "__future__"}


GRAPH = {name: imports(name) for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in GRAPH[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    return seen


def test_the_graph_is_read():
    """The reader sees known edges, a type-only one and a relative one included."""
    assert "azr.selfplay.samples" in GRAPH["azr.selfplay.step_log"]  # under TYPE_CHECKING
    assert "azr.training.trainer" in GRAPH["azr.training.checkpoint"]  # under TYPE_CHECKING
    assert "azr.executor._executor" in GRAPH["azr.executor"]  # relative


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["azr.rollout", "azr.selfplay"])
def test_rollout_and_selfplay_never_reach_training(package):
    """Not even through another module: generation and self-play run with no optimizer in the process."""
    offenders = {
        f"{name} -> {target}"
        for name in MODULES
        if name == package or name.startswith(package + ".")
        for target in reachable(name)
        if target.startswith("azr.training")
    }
    assert not offenders


def test_algo_is_pure():
    """azr.algo imports nothing of azr outside itself and, beyond the standard library, only torch."""
    algo = [n for n in MODULES if n == "azr.algo" or n.startswith("azr.algo.")]
    assert algo
    for name in algo:
        assert {m for m in GRAPH[name] if not m.startswith("azr.algo")} == set(), name
        assert third_party(name) <= {"torch"}, name


def _source_files() -> list[Path]:
    return sorted((SRC / "azr").rglob("*.py"))


def test_module_sizes():
    too_long = {}
    for path in _source_files():
        key = path.relative_to(SRC).as_posix()
        lines = path.read_text(encoding="utf-8").count("\n")
        if lines > MODULE_EXCEPTIONS.get(key, MAX_MODULE_LINES):
            too_long[key] = lines
    assert too_long == {}


def test_function_sizes():
    too_long = {}
    for path in _source_files():
        key = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_EXCEPTIONS.get(f"{key}:{node.name}", MAX_FUNCTION_LINES):
                    too_long[f"{key}:{node.name}"] = lines
    assert too_long == {}


def readme_tree() -> set[str]:
    """Paths (relative to ``src/``) of the files in the README's annotated tree of ``src/azr/``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```\n(src/azr/\n.*?)```", text, re.S)
    assert block, "the README has no file tree starting with src/azr/"
    paths: set[str] = set()
    stack: list[tuple[int, str]] = [(-1, "azr")]
    for line in block.group(1).splitlines()[1:]:
        match = re.match(r"( +)(\S+)", line)
        if not match:
            break  # the tree of src/azr/ ends at the first line that is not indented
        depth, entry = len(match.group(1)), match.group(2)
        while stack[-1][0] >= depth:
            stack.pop()
        path = f"{stack[-1][1]}/{entry.rstrip('/')}"
        if entry.endswith("/"):
            stack.append((depth, path))
        else:
            paths.add(path)
    return paths


def test_readme_tree_lists_every_module():
    listed = readme_tree()
    modules = {
        p.relative_to(SRC).as_posix() for p in _source_files() if p.name not in ("__init__.py", "__main__.py")
    }
    assert sorted(modules - listed) == [], "modules missing from the README's file tree"
    assert sorted(p for p in listed if not (SRC / p).exists()) == [], "README tree entries that do not exist"
