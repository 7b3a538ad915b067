"""``azr report RUN_DIR [--open]``: write ``RUN_DIR/report.html`` (self-contained) and print its path."""

from __future__ import annotations

import argparse

HELP = "Write an HTML report of a run directory."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="A run directory written by `azr train`.")
    parser.add_argument("--open", action="store_true", help="Open the report in the default browser.")


def run(args: argparse.Namespace) -> int:
    from azr.report import write_report

    path = write_report(args.run_dir)
    print(path)
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print("no browser found; open the file above by hand")
    return 0
