"""The ``azr`` command line. Subcommands live in :mod:`azr.commands`, imported only when used."""

from __future__ import annotations

import os

from azr.runtime import configure_process, gpu_host, use_jemalloc  # imports no torch

if not gpu_host():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before anything imports torch (see azr.runtime)

import argparse
import importlib
import sys

from azr import __version__
from azr.config import ConfigError
from azr.errors import AzrError

COMMANDS: dict[str, str] = {
    "train": "Run self-play: seed the buffers, then propose, solve and update.",
    "eval": "Evaluate a model or checkpoint on code and math benchmarks.",
    "compare": "Compare two eval results files item by item (gained, lost, McNemar p-value).",
    "report": "Write an HTML report of a run directory.",
    "models": "List, fetch and convert models.",
    "seed": "Run the seeding stage alone (fill the task buffers).",
    "tasks": "Inspect a run's task store: counts, samples, export.",
    "sandbox": "Run a program in the sandbox and print the typed result.",
    "selfcheck": "Show versions, the sandbox tier and the cached models.",
}


OVERRIDABLE = {"train", "seed", "eval"}  # commands that accept --section.field=value config overrides


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="azr", description="Absolute Zero Reasoner self-play.")
    parser.add_argument("--version", action="version", version=f"azr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"azr.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"azr.commands.{name}":
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(p)
        modules[name] = module
    return parser, modules


def entry() -> int:
    """The ``azr`` command: jemalloc preloaded where it is installed (:func:`azr.runtime.use_jemalloc`), then
    :func:`main`."""
    try:
        use_jemalloc()
    except AzrError as e:
        print(f"azr: error: {e}", file=sys.stderr)
        return 2
    return main()


def main(argv: list[str] | None = None) -> int:
    configure_process()
    parser, modules = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    if len(overrides) != len(extra) or (overrides and args.command not in OVERRIDABLE):
        parser.parse_args(argv)  # reports the unrecognised arguments and exits 2
    args.overrides = overrides
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(modules[args.command].run(args) or 0)
    except (AzrError, ConfigError) as e:
        print(f"azr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"azr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
