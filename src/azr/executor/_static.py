"""Static pre-check of a program's AST: defence in depth, not the security boundary (the sandbox is)."""

from __future__ import annotations

import ast

BANNED_MODULES: frozenset[str] = frozenset(
    """
    random time datetime os sys subprocess threading _thread multiprocessing concurrent asyncio socket ssl select
    selectors logging hashlib hmac secrets uuid calendar pickle marshal shelve dbm copyreg ctypes cffi importlib
    imp pkgutil runpy zipimport builtins gc inspect resource signal faulthandler tracemalloc atexit shutil pathlib
    tempfile glob fnmatch io fileinput mmap fcntl termios tty pty platform sysconfig site code codeop pdb
    webbrowser urllib http ftplib smtplib poplib imaplib telnetlib socketserver xmlrpc sqlite3 posix nt pwd grp
    """.split()
)
"""Top-level modules a program may not import (nondeterminism, I/O, processes, introspection)."""

BANNED_NAMES: frozenset[str] = frozenset(
    "__import__ eval exec compile open input breakpoint globals locals vars help exit quit __builtins__ "
    "__loader__ __spec__ memoryview".split()
)
"""Names a program may not mention (dynamic code, file access, interpreter escapes)."""

BANNED_ATTRIBUTES: frozenset[str] = frozenset(
    "__subclasses__ __globals__ __builtins__ __code__ __bases__ __base__ __mro__ __dict__ __closure__ __func__ "
    "__self__ __getattribute__ __reduce__ __reduce_ex__ __loader__ __spec__ __import__ __init_subclass__ "
    "f_globals f_locals f_builtins f_back f_code gi_frame gi_code cr_frame ag_frame tb_frame co_code".split()
)
"""Attributes used to walk from an ordinary object to the interpreter's internals."""


def static_check(program: str, max_chars: int = 4_000, entry: str | None = "f") -> str | None:
    """Check a program without running it; return ``None`` if it passes, else a short reason.

    Rejects: text longer than ``max_chars``, syntax errors, a missing top-level ``def <entry>`` (when ``entry`` is
    given), imports of :data:`BANNED_MODULES`, any use of :data:`BANNED_NAMES`, attribute access to
    :data:`BANNED_ATTRIBUTES`, and ``getattr``/``setattr``/``delattr`` with a dunder string.
    """
    if len(program) > max_chars:
        return f"program longer than {max_chars} characters"
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        return f"syntax error: {e}"
    if entry is not None and not any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == entry for n in tree.body
    ):
        return f"no top-level function {entry!r}"
    for node in ast.walk(tree):
        reason = _check_node(node)
        if reason:
            return reason
    return None


def _check_node(node: ast.AST) -> str | None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in BANNED_MODULES:
                return f"banned import: {alias.name}"
    elif isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if node.level or module.split(".")[0] in BANNED_MODULES:
            return f"banned import: {'.' * node.level}{module}"
    elif isinstance(node, ast.Name) and node.id in BANNED_NAMES:
        return f"banned name: {node.id}"
    elif isinstance(node, ast.Attribute) and node.attr in BANNED_ATTRIBUTES:
        return f"banned attribute: {node.attr}"
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in ("getattr", "setattr", "delattr", "hasattr") and len(node.args) >= 2:
            name = node.args[1]
            if not isinstance(name, ast.Constant) or (
                isinstance(name.value, str) and name.value.startswith("__")
            ):
                return f"{node.func.id} with a dynamic or dunder attribute name"
    return None
