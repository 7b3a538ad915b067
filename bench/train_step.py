"""Throughput of one policy update on the default model: azr's ``Trainer`` against a naive HF training step.

    AZR_CACHE=/tmp/azrcache .venv/bin/python bench/train_step.py [--seqs 8] [--tokens 384] [--threads 2]

Setting: ``--seqs`` sequences of ``--tokens`` tokens each (``--prompt`` prompt tokens + the rest reply), random
token ids, one full update per timed step (forward, backward, optimizer step). With ``--varied`` the reply lengths
spread evenly around the same mean, so padding matters. With ``--shared-prefix N`` each group of ``--micro-batch``
sequences starts with the same N prompt tokens, as AZR's prompts of one task type and role do (the naive step
cannot use that; azr's trainer runs the prefix once per micro-batch). The engines start from the same weights and take turns
(round-robin, one step each per round) in this process, so load changes on a shared machine hit them alike;
compare the ratios, not the absolute numbers. Besides wall time the table shows process CPU seconds per step,
which stay meaningful when other jobs share the cores (use ``--threads 1`` there). tokens/s counts
real (prompt + reply) tokens, never padding. Results go to ``bench/results/train_step.json``.

Engines:

- ``naive`` — what a plain HF script does: the whole padded batch in one fp32 forward with ``labels`` (prompt and
  padding set to -100, full-vocabulary cross-entropy on every position), ``loss.backward()``, grad clipping and
  ``torch.optim.AdamW`` with its defaults.
- ``naive-bf16`` — the same plain step under CPU bfloat16 autocast (what the plain script gets from one
  ``torch.autocast`` line), so that azr's gain at equal precision shows too.
- ``azr-fp32`` — ``Trainer.step`` (length-sorted micro-batches, shared prompt prefixes run once, LM head only on reply positions, PPO-clip with the
  paper's entropy bonus through a fused log-prob/entropy kernel, fused AdamW), no autocast.
- ``azr-bf16`` — the same under CPU bfloat16 autocast (``training.bf16_autocast = true``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the azr command does, before torch is imported

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from azr.config import AlgorithmConfig, TrainingConfig
from azr.models import load_model
from azr.runtime import configure_process
from azr.training.trainer import TrainBatch, Trainer


def make_batch(
    vocab: int,
    seqs: int,
    tokens: int,
    prompt: int,
    varied: bool,
    shared: int = 0,
    group: int = 4,
    seed: int = 0,
) -> TrainBatch:
    """Random token ids; with ``shared`` > 0 each run of ``group`` sequences starts with the same ``shared``
    prompt tokens, as AZR prompts of one task type and role do (system message, demonstrations)."""
    g = torch.Generator().manual_seed(seed)
    reply = tokens - prompt
    if varied:  # evenly spread around the same mean: reply +- 75%
        spread = [round(reply * (0.25 + 1.5 * i / max(seqs - 1, 1))) for i in range(seqs)]
    else:
        spread = [reply] * seqs
    prompts = [torch.randint(100, vocab, (prompt,), generator=g).tolist() for _ in range(seqs)]
    if shared:
        prefixes = [torch.randint(100, vocab, (shared,), generator=g).tolist() for _ in range(0, seqs, group)]
        prompts = [prefixes[i // group] + p[shared:] for i, p in enumerate(prompts)]
    replies = [torch.randint(100, vocab, (n,), generator=g).tolist() for n in spread]
    advantages = torch.randn(seqs, generator=g).tolist()
    return TrainBatch(prompts, replies, advantages)


def naive_step_fn(
    model: Any, tokenizer: Any, batch: TrainBatch, lr: float, bf16: bool = False
) -> Callable[[], None]:
    """A plain padded forward/backward with labels (fp32, or under bf16 autocast), then AdamW (library defaults)."""
    pad = tokenizer.pad_token_id
    width = max(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids, strict=True))
    ids = torch.full((len(batch), width), pad, dtype=torch.long)  # (B, L)
    att = torch.zeros_like(ids)  # (B, L)
    labels = torch.full_like(ids, -100)  # (B, L)
    for i, (p, c) in enumerate(zip(batch.prompt_ids, batch.completion_ids, strict=True)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        att[i, : len(p) + len(c)] = 1
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return step


def build_engines(base: Any, tokenizer: Any, batch: TrainBatch, args: Any) -> dict[str, Callable[[], Any]]:
    """One step function per engine; the naive engine and the azr engines each get their own weight copy."""
    steps: dict[str, Callable[[], Any]] = {}
    names = args.engines.split(",")
    naive = [n for n in names if n.startswith("naive")]
    models = {n: base if i == 0 else copy.deepcopy(base) for i, n in enumerate(naive)}
    azr_model = copy.deepcopy(base) if naive else base
    for name in names:
        if name in models:
            steps[name] = naive_step_fn(models[name], tokenizer, batch, lr=1e-6, bf16=name == "naive-bf16")
            continue
        training = TrainingConfig(
            lr=1e-6, micro_batch_size=args.micro_batch, bf16_autocast=name == "azr-bf16", device="cpu"
        )
        trainer = Trainer(azr_model, tokenizer, training, AlgorithmConfig())  # paper: clip 0.2, entropy 0.001
        steps[name] = lambda trainer=trainer: trainer.step(batch)
    return steps


def main() -> None:
    configure_process()  # as the azr command does (azr.runtime)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=384, help="tokens per sequence (prompt + reply), the mean")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    ap.add_argument(
        "--shared-prefix",
        "--shared-head",  # the old name, still accepted
        type=int,
        default=0,
        help="prompt tokens shared by each group of --micro-batch sequences",
    )
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--varied", action="store_true", help="spread reply lengths around the mean")
    ap.add_argument("--engines", default="naive,naive-bf16,azr-fp32,azr-bf16")
    ap.add_argument("--out", default="bench/results/train_step.json")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    base, tokenizer = load_model(args.model)
    batch = make_batch(
        len(tokenizer), args.seqs, args.tokens, args.prompt, args.varied, args.shared_prefix, args.micro_batch
    )
    real_tokens = sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids, strict=True))
    steps = build_engines(base, tokenizer, batch, args)
    times: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}  # process CPU seconds: steadier when shared
    for round_ in range(args.warmup + args.repeats):  # round-robin, so load changes hit every engine alike
        for name, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
        print(f"round {round_}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items() if v), flush=True)
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        cpu_s = statistics.median(cpu[name])
        rows.append(
            {
                "engine": name,
                "seconds": median,
                "times": ts,
                "cpu_seconds": cpu_s,
                "tokens_per_s": real_tokens / median,
            }
        )

    by_name = {r["engine"]: r for r in rows}
    naive = by_name.get("naive")
    print(f"\n{args.seqs} seqs x {args.tokens} tokens ({'varied' if args.varied else 'fixed'} lengths, "
          f"{args.shared_prefix} shared prefix tokens), {args.threads} threads, median of {args.repeats}")  # fmt: skip
    print(
        "| engine | s/step | tokens/s | vs naive | vs naive, same precision | CPU s/step | vs naive (CPU) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in rows:
        peer = by_name.get("naive-bf16" if r["engine"].endswith("bf16") else "naive")
        r["speedup"] = naive["seconds"] / r["seconds"] if naive else None
        r["speedup_same_precision"] = peer["seconds"] / r["seconds"] if peer else None
        r["cpu_speedup"] = naive["cpu_seconds"] / r["cpu_seconds"] if naive else None
        cells = [
            f"{x:.2f}x" if x is not None else "-"
            for x in (r["speedup"], r["speedup_same_precision"], r["cpu_speedup"])
        ]
        print(
            f"| {r['engine']} | {r['seconds']:.2f} | {r['tokens_per_s']:.1f} | {cells[0]} | {cells[1]} "
            f"| {r['cpu_seconds']:.1f} | {cells[2]} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "setting": vars(args) | {"real_tokens": real_tokens, "load_average": os.getloadavg()},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
