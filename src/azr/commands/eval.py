"""``azr eval``: evaluate a model or checkpoint on code and math benchmarks with the training sandbox.

Greedy pass@1 by default; ``--samples k`` samples k replies per item and adds the unbiased pass@k. ``--model
oracle`` (or ``oracle-wrong``) answers with the gold (or wrong) answers to validate data and scorers for free.

``--shots K`` puts K fixed worked demonstrations before every item (default 0; the project reports ``--shots 2``,
the number of demonstrations the CPU training prompts carry); ``--demo-think trace`` shows them with the
sandbox-written trace in ``<think>`` that the CPU recipe's training prompts carry, instead of one sentence. Generation decodes ``2 * --batch-size`` sequences
together (32 by default); CRUXEval replies get 96 new tokens, enough for the short answers a small model gives
and fast enough for all 800 CRUXEval-O items in about 5.5 minutes on 2 cores. ``azr compare A.json B.json``
pairs two ``--json`` results files item by item.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Evaluate a model or checkpoint on code and math benchmarks."

DEFAULT_BENCHES = "cruxeval-o,cruxeval-i,humaneval+,mbpp+"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="Alias, model/checkpoint directory or hub id; 'oracle' / 'oracle-wrong' answer with gold/wrong answers.",
    )
    parser.add_argument(
        "--bench",
        default=DEFAULT_BENCHES,
        help="Comma-separated benchmarks: cruxeval-o, cruxeval-i, probe, probe-600, humaneval+, mbpp+, gsm8k, math500, "
        f"aime24, aime25, amc23, minerva, olympiadbench, livecodebench (default: {DEFAULT_BENCHES}).",
    )
    parser.add_argument("--limit", type=int, help="Evaluate only the first N items of each benchmark.")
    parser.add_argument("--samples", type=int, default=1, help="Replies per item (k of pass@k; 1 = greedy).")
    parser.add_argument(
        "--shots",
        type=int,
        default=0,
        help="Worked demonstrations before each item (default 0; the project reports 2). Math takes none.",
    )
    parser.add_argument(
        "--demo-file",
        metavar="PATH",
        help="A JSONL file of demonstrations in the shipped demos.jsonl format to use instead of it (checked in "
        "the sandbox first; its name and sha256 go into the results).",
    )
    parser.add_argument(
        "--demo-think",
        choices=("sentence", "trace"),
        default="sentence",
        help="The demonstrations' <think>: one sentence (default), or the sandbox's trace of the call that the CPU "
        "recipe trains on (deduction/abduction; CRUXEval then gets 192 new tokens).",
    )
    parser.add_argument(
        "--temperature", type=float, default=0.8, help="Sampling temperature when --samples > 1."
    )
    parser.add_argument("--max-new-tokens", type=int, help="Token budget per reply (default: per benchmark).")
    parser.add_argument("--data-dir", help="Local directory with the benchmark files (default: the hub).")
    parser.add_argument("--json", metavar="PATH", help="Write the summary and per-item records as JSON here.")
    parser.add_argument("--backend", default="hf", help="Generation backend: hf (default) or vllm.")
    parser.add_argument("--batch-size", type=int, default=16, help="Sequences decoded together.")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda.")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys
    import time

    from azr.config import ExecutorConfig, RolloutConfig
    from azr.errors import AzrError
    from azr.evaluation import OracleBackend, evaluate
    from azr.evaluation.demos import DemoError
    from azr.executor import Executor

    benches, demo_file = _checked(args)
    t0 = time.perf_counter()
    if args.model in ("oracle", "oracle-wrong"):
        backend, tokenizer = OracleBackend(wrong=args.model == "oracle-wrong"), None
    else:
        # Benchmark prompts carry demonstrations: room for longer ones than self-play's (the vllm backend sizes
        # its KV cache for max_prompt_tokens plus the reply budget).
        rollout = RolloutConfig(
            generation_batch_size=args.batch_size,
            max_prompt_tokens=EVAL_PROMPT_TOKENS,
            max_new_tokens_solve=max(args.max_new_tokens or 0, EVAL_REPLY_TOKENS),
        )
        backend, tokenizer = _load(args, rollout)
    # Benchmark programs and inputs are longer than self-play ones: only the size limits are raised.
    cfg = dataclasses.replace(ExecutorConfig(), max_output_chars=1_000_000)

    def progress(bench: str, done: int, total: int) -> None:
        print(f"\r{bench}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    with Executor(cfg) as executor:
        try:
            evaluation = evaluate(
                backend, tokenizer, executor, benches, limit=args.limit, data_dir=args.data_dir,
                samples=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                batch_size=max(args.batch_size, 1) * 2, progress=progress, shots=args.shots,
                demo_think=args.demo_think, demo_file=demo_file,
            )  # fmt: skip
        except DemoError as e:  # a demonstration the sandbox disagrees with, or one it cannot trace
            raise AzrError(str(e)) from None
    evaluation.meta.update(
        model=args.model, seconds=round(time.perf_counter() - t0, 1), sandbox=executor.tier
    )
    print(evaluation.table())
    print(f"total {evaluation.meta['seconds']} s (model {args.model}, sandbox {executor.tier})")
    if args.json:
        print(f"wrote {evaluation.write_json(args.json)}")
    return 0 if evaluation.results else 1


def _checked(args: argparse.Namespace) -> tuple[list[str], Path]:
    """The benchmark names and the demonstration file, once the arguments are known to be usable."""
    from azr.errors import AzrError
    from azr.evaluation.benchmarks import resolve
    from azr.evaluation.demos import DEMO_FILE, first_demos

    benches = [b for b in args.bench.split(",") if b.strip()]
    demo_file = Path(args.demo_file) if args.demo_file else DEMO_FILE
    try:
        for bench in resolve(benches):
            for kind in bench.demo_types:
                first_demos(kind, max(args.shots, 0), demo_file)
    except ValueError as e:  # an unknown benchmark, a bad demonstration file, or more shots than it has
        raise AzrError(str(e)) from None
    if args.samples < 1 or (args.limit is not None and args.limit < 1):
        raise AzrError("--samples and --limit must be >= 1")
    if args.shots < 0:
        raise AzrError("--shots must be >= 0")
    return benches, demo_file


EVAL_PROMPT_TOKENS = 4096
EVAL_REPLY_TOKENS = 1024  # above every benchmark's default reply budget (azr.evaluation.benchmarks)


def _load(args: argparse.Namespace, rollout_cfg: object) -> tuple[object, object]:
    import torch

    from azr.models import load_model
    from azr.rollout import make_backend

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model, device=device)
    model.eval()
    return make_backend(args.backend, model, tokenizer, rollout_cfg), tokenizer
