"""``azr compare A.json B.json``: pair two ``azr eval --json`` results files item by item, test the difference.

For every benchmark in both results files: items paired by id (greedy verdict), the scores before (A) and after
(B), the items gained and lost, and the exact two-sided McNemar p-value (:mod:`azr.evaluation.compare`).
Warnings go to stderr when items are unpaired or the runs differ in shots, demonstrations, samples or token
budget. For CRUXEval-O and -I it also counts the answers that copy what the prompt shows (the input, the
output) and repeats the test on the items where copying cannot score (:mod:`azr.evaluation.shortcut`).
"""

from __future__ import annotations

import argparse

HELP = "Compare two eval results files item by item (gained, lost, McNemar p-value)."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "before", metavar="A.json", help="The first results file (azr eval --json), e.g. the base model."
    )
    parser.add_argument(
        "after", metavar="B.json", help="The second results file, e.g. the trained checkpoint."
    )
    parser.add_argument(
        "--json", metavar="PATH", help="Also write the comparison (with every flipped id) here."
    )
    parser.add_argument("--ids", type=int, default=10, help="Flipped ids printed per benchmark (default 10).")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="Where the CRUXEval file is, for the shortcut accounting of results files that do not record the "
        "items' inputs and outputs (written before azr eval did).",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from azr.evaluation.compare import compare_results, load_results
    from azr.fsutil import atomic_write_json

    result = compare_results(load_results(args.before), load_results(args.after), args.data_dir)
    for warning in result.warnings:
        print(f"azr compare: warning: {warning}", file=sys.stderr)
    print(result.table(max_ids=max(args.ids, 0)))
    if args.json:
        payload = {"a": str(args.before), "b": str(args.after), **result.to_dict()}
        print(f"wrote {atomic_write_json(args.json, payload)}")
    return 0
