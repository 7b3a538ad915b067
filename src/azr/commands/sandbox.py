"""``azr sandbox run FILE.py [--call 'f(1, 2)']``: run a program in the sandbox and print the typed result as JSON."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

HELP = (
    "Run a program (or one call of its function) in the sandbox and print the typed result as one JSON line."
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help="Run FILE.py in the sandbox.", description=HELP)
    p.add_argument("file", type=Path, help="Python source file ('-' reads standard input).")
    p.add_argument(
        "--call", default=None, help='A call of a function defined by the file, e.g. "f(1, [2, 3])".'
    )
    p.add_argument(
        "--tier", default=None, help="Force a tier: none, rlimits, seccomp or bwrap (default: strongest)."
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="Wall-clock limit in seconds (default: config)."
    )
    p.add_argument("--memory-mb", type=int, default=None, help="Address-space limit in MB (default: config).")
    p.add_argument(
        "--skip-static-checks",
        action="store_true",
        help="Do not run the AST pre-check (tests the sandbox alone).",
    )


def split_call(call: str) -> tuple[str, str]:
    """``"f(1, [2, 3])"`` -> ``("f", "1, [2, 3]")``; raises ValueError unless it is one call of a plain name."""
    try:
        node = ast.parse(call.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"--call is not valid Python: {e.msg}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError("--call must look like name(arguments), e.g. f(1, 2)")
    text = call.strip()
    return node.func.id, text[text.index("(") + 1 : text.rindex(")")]


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from azr.config import ExecutorConfig
    from azr.errors import AzrError
    from azr.executor import TIERS, ExecResult, Executor, Status, static_check

    if args.tier is not None and args.tier not in TIERS:
        raise AzrError(f"unknown tier {args.tier!r}; choose one of {', '.join(TIERS)}")
    source = sys.stdin.read() if str(args.file) == "-" else _read(args.file, AzrError)
    entry, arguments = None, ""
    if args.call is not None:
        try:
            entry, arguments = split_call(args.call)
        except ValueError as e:
            raise AzrError(str(e)) from None
    cfg = ExecutorConfig()
    overrides = {"timeout_s": args.timeout, "memory_mb": args.memory_mb, "workers": 1, "determinism_runs": 1}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    cfg = dataclasses.replace(cfg, max_program_chars=max(cfg.max_program_chars, len(source)))
    reason = None if args.skip_static_checks else static_check(source, len(source) + 1, entry)
    tier = args.tier or "-"
    if reason:
        result = ExecResult(Status.REJECTED, message=reason)
    else:
        with Executor(cfg, tier=args.tier) as ex:
            tier = ex.tier
            result = ex.run_program(source) if entry is None else ex.run_calls(source, [arguments], entry)[0]
    print(json.dumps({**result.to_json(), "tier": tier}))
    return 0 if result.ok else 1


def _read(path: Path, error: type[Exception]) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None
