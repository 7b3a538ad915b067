"""Rollout throughput on the default model: the ``hf`` backend against plain ``model.generate`` and llama.cpp.

    AZR_CACHE=/tmp/azrcache .venv/bin/python bench/rollout.py [--batch 16] [--new-tokens 256] [--threads 2]

Setting: ``--batch`` chat-formatted prompts of different lengths, sampling at temperature 1.0 / top_p 1.0, no stop
string and EOS ignored so every sequence runs to ``--new-tokens`` (the same work for every engine). Each engine
runs in this same process one after the other, so the ratios (not the absolute numbers) are what to compare on a
shared machine. Results go to ``bench/results/rollout.json``.

Threads: on a 2-core box shared with other jobs (load 9-13), ``--threads 2`` made every torch engine 5-8x slower
than ``--threads 1`` (OpenMP workers wait for a descheduled sibling); on a quiet machine use ``--threads 2``.

Engines:

- ``hf`` — ``HFBackend`` (fp32, preallocated KV cache) — the default configuration.
- ``hf-dynamic-cache`` — the same loop with transformers' ``DynamicCache`` (torch.cat per step).
- ``hf-bf16`` — the same loop decoding a bf16 copy of the weights.
- ``generate`` — ``model.generate(do_sample=True, min_new_tokens=N, max_new_tokens=N)``, library defaults otherwise.
- ``llama.cpp`` — ``llama-cpp-python`` on the same Q4_1 GGUF through its high-level API, which decodes one sequence
  at a time (``create_completion`` per prompt, EOS banned by a logit bias). Skipped with a message when the package
  is not installed (it is an optional, never a core, dependency).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from azr.config import RolloutConfig
from azr.models import ALIASES, gguf_path, load_model
from azr.rollout import Sampling
from azr.rollout.hf import HFBackend

TOPICS = [
    "reverse a list",
    "count the vowels in a string",
    "compute the n-th Fibonacci number with memoisation and explain why it is fast",
    "merge two sorted lists",
    "check whether a number is prime",
    "flatten a nested list of arbitrary depth, then sort the result and remove duplicates",
    "sum the digits of an integer",
    "return the longest word of a sentence",
]


def make_prompts(tokenizer: Any, batch: int) -> list[str]:
    msgs = [f"Write a Python function f that does this: {TOPICS[i % len(TOPICS)]}." for i in range(batch)]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": m}], tokenize=False, add_generation_prompt=True
        )
        for m in msgs
    ]


def run_hf(model: Any, tok: Any, prompts: list[str], n: int, threads: int, **kw: Any) -> tuple[int, float]:
    cfg = RolloutConfig(generation_batch_size=len(prompts))
    backend = HFBackend(model, tok, cfg, num_threads=threads, ignore_eos=True, **kw)
    backend.generate(prompts[:2], Sampling(max_new_tokens=4, stop=(), seed=1))  # warm-up
    start = time.perf_counter()
    out = backend.generate(prompts, Sampling(max_new_tokens=n, stop=(), seed=0))
    return sum(len(c.token_ids) for c in out), time.perf_counter() - start


def run_generate(model: Any, tok: Any, prompts: list[str], n: int, threads: int) -> tuple[int, float]:
    torch.set_num_threads(threads)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(**enc, do_sample=True, max_new_tokens=n, min_new_tokens=n)
        seconds = time.perf_counter() - start
    return (out.shape[1] - enc.input_ids.shape[1]) * len(prompts), seconds


def run_llamacpp(model: Any, tok: Any, prompts: list[str], n: int, threads: int) -> tuple[int, float]:
    from llama_cpp import Llama

    llm = Llama(str(gguf_path(ALIASES["smollm2-135m"])), n_ctx=1024, n_threads=threads, verbose=False, seed=0)
    eos = llm.token_eos()
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        r = llm.create_completion(
            p, max_tokens=n, temperature=1.0, top_p=1.0, top_k=0, logit_bias={eos: -1e9}
        )
        tokens += r["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated engine names to run")
    args = ap.parse_args()
    model, tok = load_model("smollm2-135m")
    model.eval()
    prompts = make_prompts(tok, args.batch)
    n, th = args.new_tokens, args.threads
    engines: dict[str, Callable[[], tuple[int, float]]] = {
        "hf": lambda: run_hf(model, tok, prompts, n, th),
        "hf-dynamic-cache": lambda: run_hf(model, tok, prompts, n, th, prealloc_cache=False),
        "hf-bf16": lambda: run_hf(model, tok, prompts, n, th, decode_dtype=torch.bfloat16),
        "generate": lambda: run_generate(model, tok, prompts, n, th),
        "llama.cpp": lambda: run_llamacpp(model, tok, prompts, n, th),
    }
    wanted = [e for e in args.only.split(",") if e] or list(engines)
    rows: dict[str, dict[str, float]] = {}
    for name in wanted:
        try:
            tokens, seconds = engines[name]()
        except ImportError as e:
            print(
                f"{name}: skipped ({e}); install with `.venv/bin/pip install llama-cpp-python` (builds ~5-15 min)"
            )
            continue
        rows[name] = {"tokens": tokens, "seconds": seconds, "tok_per_s": tokens / seconds}
        print(f"{name:18s} {tokens:6d} tok {seconds:8.1f} s {tokens / seconds:8.1f} tok/s", flush=True)
    base = rows.get("hf", {}).get("tok_per_s")
    print(f"\n{'engine':18s} {'tok/s':>8s} {'hf / engine':>12s}")
    for name, r in rows.items():
        ratio = f"{base / r['tok_per_s']:.2f}x" if base else "-"
        print(f"{name:18s} {r['tok_per_s']:8.1f} {ratio:>12s}")
    out = Path(__file__).parent / "results" / "rollout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    setting = {"batch": args.batch, "new_tokens": n, "threads": th, "temperature": 1.0, "stop": None}
    out.write_text(json.dumps({"setting": setting, "engines": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
