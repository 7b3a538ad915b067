"""``azr models``: list the built-in aliases and the cache, or convert/load one."""

from __future__ import annotations

import argparse

HELP = "List, fetch and convert models."


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.add_parser("list", help="Show the built-in aliases and what is cached.")
    prep = sub.add_parser("prepare", help="Convert a built-in model into the cache now (done once, ~25 s).")
    prep.add_argument("name", nargs="?", default="smollm2-135m")
    prep.add_argument("--force", action="store_true", help="Convert again even if cached.")
    gen = sub.add_parser("generate", help="Load a model and greedily continue a prompt (a smoke test).")
    gen.add_argument("name", nargs="?", default="smollm2-135m")
    gen.add_argument("--prompt", default="Write a Python function that reverses a string.")
    gen.add_argument("--max-new-tokens", type=int, default=40)


def run(args: argparse.Namespace) -> int:
    action = args.models_command or "list"
    if action == "list":
        return _list()
    if action == "prepare":
        return _prepare(args.name, args.force)
    return _generate(args.name, args.prompt, args.max_new_tokens)


def _list() -> int:
    from rich.console import Console
    from rich.table import Table

    from azr.models import cache_dir, list_models

    table = Table(title=f"Built-in models (cache: {cache_dir()})")
    for column in ("alias", "description", "wheel", "cached"):
        table.add_column(column)
    for row in list_models():
        table.add_row(*row.values())
    Console().print(table)
    print("Any local model directory or hub id also works as --model.")
    return 0


def _prepare(name: str, force: bool) -> int:
    import time

    from azr.errors import AzrError
    from azr.models import ALIASES, convert_alias

    if name not in ALIASES:
        raise AzrError(f"{name!r} is not a built-in alias (see `azr models list`)")
    t0 = time.perf_counter()
    path = convert_alias(name, force=force)
    print(f"{name}: ready at {path} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _generate(name: str, prompt: str, max_new_tokens: int) -> int:
    import time

    import torch

    from azr.models import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(name)
    loaded = time.perf_counter() - t0
    messages = [{"role": "user", "content": prompt}]
    enc = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    t1 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, enc["input_ids"].shape[1] :]
    took = time.perf_counter() - t1
    print(tokenizer.decode(new, skip_special_tokens=True).strip())
    print(f"[load {loaded:.1f} s, {len(new)} tokens in {took:.1f} s]")
    return 0
