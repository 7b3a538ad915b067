"""``azr report RUN_DIR [RUN_DIR ...] [--out FILE] [--open]``: write an HTML report and print its path.

One run: ``RUN_DIR/report.html`` (:func:`azr.report.run.write_report`). Several runs: their curves and evaluation
scores overlaid, one colour per run, in ``compare.html`` of the first run directory
(:func:`azr.report.compare.write_comparison`). ``--out`` writes elsewhere. Both files are self-contained.
"""

from __future__ import annotations

import argparse

HELP = "Write an HTML report of a run directory, or a comparison of several."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        metavar="RUN_DIR",
        nargs="+",
        help="Run directories written by `azr train` (two or more: compare).",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="Where to write (default: RUN_DIR/report.html, or compare.html in the first run directory).",
    )
    parser.add_argument("--open", action="store_true", help="Open the report in the default browser.")


def run(args: argparse.Namespace) -> int:
    if len(args.run_dirs) == 1:
        from azr.report.run import write_report

        path = write_report(args.run_dirs[0], args.out)
    else:
        from azr.report.compare import write_comparison

        path = write_comparison(args.run_dirs, args.out)
    print(path)
    if args.open:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            print("no browser found; open the file above by hand")
    return 0
