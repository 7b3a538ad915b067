"""Rollout throughput on the default model: the ``hf`` backend against plain ``model.generate`` and llama.cpp.

    AZR_CACHE=/tmp/azrcache .venv/bin/python bench/rollout.py [--batch 16] [--new-tokens 256] [--threads 2]

Setting: ``--batch`` chat-formatted prompts of different lengths, sampling at temperature 1.0 / top_p 1.0, no stop
string and EOS ignored so every sequence runs to ``--new-tokens`` (the same work for every engine). Each engine
runs in this same process one after the other, so the ratios (not the absolute numbers) are what to compare on a
shared machine. Results go to ``bench/results/rollout.json``.

Threads: like the ``azr`` command, this script makes OpenMP threads sleep rather than spin while waiting
(``OMP_WAIT_POLICY=PASSIVE`` unless set): with spinning threads, a 2-core box shared with other jobs made every
torch engine 5-10x slower at ``--threads 2``. On a quiet machine use ``--threads 2``.

Engines:

- ``hf`` — ``HFBackend`` as configured by default: preallocated KV cache, bf16 weights where bf16 is native
  (AMX/AVX512-BF16 CPUs, :mod:`azr.precision`), else fp32.
- ``hf-dynamic-cache`` — the same loop with transformers' ``DynamicCache`` (torch.cat per step).
- ``hf-bf16`` — the same loop forced to decode a bf16 copy of the weights (slow where bf16 is emulated).
- ``generate`` — ``model.generate(do_sample=True, min_new_tokens=N, max_new_tokens=N)``, library defaults otherwise.
- ``llama.cpp`` — ``llama-cpp-python`` on the same Q4_1 GGUF through its high-level API, which decodes one sequence
  at a time (``create_completion`` per prompt, EOS banned by a logit bias). Skipped with a message when the package
  is not installed (it is an optional, never a core, dependency).
- ``llama.cpp-batched`` — the same GGUF through llama.cpp's own batch API (``llama-cpp-python``'s low-level
  bindings): one sequence id per prompt, every prompt prefilled once in one ``llama_decode``, then one
  ``llama_decode`` per step carrying one token per sequence, like the ``hf`` backend decodes its whole batch.
  Sampling is numpy over ``llama_get_logits_ith`` (softmax at temperature 1.0, seeded, EOS banned as above).
  The KV cache is split per sequence (``kv_unified`` off, llama.cpp's default): ``n_ctx`` is batch x (longest
  prompt + new tokens, rounded up to 256 as llama.cpp does). ``n_threads`` and ``n_threads_batch`` are both
  ``--threads``. Timed from the prefill to the last sampled token (model loading, context creation and tokenizing
  excluded). Skipped like ``llama.cpp`` when the package is not installed.

Building llama.cpp: on a CPU with AMX, ``pip install llama-cpp-python`` (``-march=native``) builds ggml's AMX
matmul, which crashed (SIGSEGV in ``ggml_backend_amx_mul_mat``) on every batch of more than one token with
llama-cpp-python 0.3.36 on this project's Sapphire Rapids VM. Build it without AMX, keeping AVX512:
``CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install --no-deps llama-cpp-python`` (~4 min).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the azr command does, before torch is imported

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from azr.config import RolloutConfig
from azr.models import ALIASES, gguf_path, load_model
from azr.rollout import Sampling
from azr.rollout.hf import HFBackend
from azr.runtime import configure_process

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


def _llama_tokenize(vocab: Any, text: str) -> list[int]:
    """Tokenize like ``create_completion`` does: no BOS added, special tokens (the chat markers) parsed."""
    import llama_cpp

    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    k = llama_cpp.llama_tokenize(vocab, data, len(data), buf, len(buf), False, True)
    if k < 0:
        raise RuntimeError(f"llama_tokenize needs {-k} tokens")
    return list(buf[:k])


def _llama_load() -> Any:
    """Load the Q4_1 GGUF through the low-level API (quiet, like ``Llama(verbose=False)``)."""
    import llama_cpp

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    path = str(gguf_path(ALIASES["smollm2-135m"])).encode()
    model = llama_cpp.llama_model_load_from_file(path, llama_cpp.llama_model_default_params())
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path!r}")
    return model


def _llama_context(model: Any, n_seq: int, seq_len: int, n_prefill: int, threads: int) -> Any:
    """A context holding ``n_seq`` sequences of up to ``seq_len`` tokens, taking the whole prefill in one call."""
    import llama_cpp

    cp = llama_cpp.llama_context_default_params()
    cp.n_seq_max = n_seq
    seq_len = -(-seq_len // 256) * 256  # llama.cpp pads each sequence's share to 256 cells anyway
    cp.n_ctx = n_seq * seq_len  # kv_unified off (default): each sequence gets n_ctx / n_seq_max cells
    cp.n_batch = cp.n_ubatch = max(n_prefill, n_seq)
    cp.n_threads = cp.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        raise RuntimeError("llama.cpp could not create the context")
    got = llama_cpp.llama_n_ctx_seq(ctx)
    if got < seq_len:
        llama_cpp.llama_free(ctx)
        raise RuntimeError(f"llama.cpp gave {got} KV cells per sequence, {seq_len} needed")
    return ctx


def _llama_fill(batch: Any, items: list[tuple[int, int, int, bool]]) -> None:
    """Write ``(token, position, sequence id, wants logits)`` rows into a ``llama_batch``."""
    for i, (token, pos, seq, out) in enumerate(items):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = out
    batch.n_tokens = len(items)


def _llama_decode(ctx: Any, batch: Any) -> None:
    import llama_cpp

    rc = llama_cpp.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


def _llama_sample(ctx: Any, rows: list[int], n_vocab: int, eos: int, rng: np.random.Generator) -> list[int]:
    """One token per batch row in ``rows``, drawn from softmax(logits) (temperature 1.0, top_p 1.0), EOS banned."""
    import llama_cpp

    logits = np.stack(
        [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,)) for i in rows]
    ).astype(np.float64)
    logits[:, eos] = -np.inf
    cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    u = rng.random(len(rows)) * cdf[:, -1]
    return np.minimum((cdf <= u[:, None]).sum(axis=1), n_vocab - 1).tolist()


def _llama_batched_generate(
    ctx: Any, batch: Any, prompts: list[list[int]], n: int, eos: int
) -> list[list[int]]:
    """Prefill every prompt once (sequence id = prompt index), then ``n - 1`` steps of one token per sequence."""
    import llama_cpp

    n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llama_cpp.llama_get_model(ctx)))
    rng = np.random.default_rng(0)
    items = [(t, pos, s, pos == len(p) - 1) for s, p in enumerate(prompts) for pos, t in enumerate(p)]
    _llama_fill(batch, items)
    _llama_decode(ctx, batch)
    last_rows = [i for i, item in enumerate(items) if item[3]]
    out = [[t] for t in _llama_sample(ctx, last_rows, n_vocab, eos, rng)]
    rows = list(range(len(prompts)))
    for step in range(n - 1):
        _llama_fill(
            batch,
            [(o[-1], len(p) + step, s, True) for s, (p, o) in enumerate(zip(prompts, out, strict=True))],
        )
        _llama_decode(ctx, batch)
        for o, t in zip(out, _llama_sample(ctx, rows, n_vocab, eos, rng), strict=True):
            o.append(t)
    return out


def run_llamacpp_batched(model: Any, tok: Any, prompts: list[str], n: int, threads: int) -> tuple[int, float]:
    import llama_cpp

    lmodel = _llama_load()
    try:
        vocab = llama_cpp.llama_model_get_vocab(lmodel)
        ids = [_llama_tokenize(vocab, p) for p in prompts]
        n_prefill = sum(map(len, ids))
        ctx = _llama_context(lmodel, len(ids), max(map(len, ids)) + n, n_prefill, threads)
        batch = llama_cpp.llama_batch_init(max(n_prefill, len(ids)), 0, 1)
        try:
            start = time.perf_counter()
            out = _llama_batched_generate(ctx, batch, ids, n, llama_cpp.llama_vocab_eos(vocab))
            seconds = time.perf_counter() - start
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(lmodel)
    return sum(map(len, out)), seconds


def main() -> None:
    configure_process()  # as the azr command does (azr.runtime)
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
        "llama.cpp-batched": lambda: run_llamacpp_batched(model, tok, prompts, n, th),
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
