"""One check of azr's GPU path on one CUDA GPU, offline, printing one table (run by ``scripts/gpu_check.sh``).

Rows: one update of a random-weight model of Qwen2.5-1.5B's shape with ``configs/gpu-1.5b.toml`` (peak memory
against :mod:`azr.training.memory`'s estimate); ``hf`` decoding tokens/s; vLLM tokens/s, sampler-vs-trainer log-prob
agreement, duplicate-prompt diversity and whether a weight sync changes the engine's output (when vLLM imports);
a one-rank FSDP2 update and checkpoint round trip over NCCL. ``pytest -m gpu`` and ``azr eval`` run from the shell
script. Without CUDA every row says it was skipped and why.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from azr.distributed import Dist

ROOT = Path(__file__).resolve().parents[1]
GB = 1024**3
Row = tuple[str, str, str]  # (check, result, ok / FAIL / skipped)


def qwen_1_5b_shape() -> tuple[object, object]:
    """A random-weight Qwen2 model of Qwen2.5-1.5B's shape on the GPU (fp32) and azr's tiny tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from azr.models import tiny_model

    _, tok = tiny_model()
    config = Qwen2Config(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         tie_word_embeddings=True)  # fmt: skip
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config)
    return model, tok


def gpu_config(prompt: int, reply: int):
    from azr.config import load

    cfg = load(str(ROOT / "configs" / "gpu-1.5b.toml"))
    rollout = dataclasses.replace(cfg.rollout, max_prompt_tokens=prompt, max_new_tokens_propose=reply,
                                  max_new_tokens_solve=reply)  # fmt: skip
    return dataclasses.replace(cfg, rollout=rollout)


def check_update(model, tok) -> list[Row]:
    from azr.training import memory
    from azr.training.trainer import TrainBatch, Trainer

    cfg = gpu_config(prompt=1024, reply=1024)
    trainer = Trainer(model, tok, cfg.training, cfg.algorithm, cfg.model)
    est = memory.estimate(trainer.model, cfg, sum(p.numel() for p in trainer.params), device="cuda")
    g = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(0, len(tok), (n,), generator=g).tolist()  # noqa: E731
    batch = TrainBatch([ids(1024)], [ids(1024)], [1.0], temperatures=[1.0])
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    metrics = trainer.step(batch)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    ok = metrics["optimizer_steps"] == 1.0 and peak <= est.total * 1.1
    return [
        ("update (1.5B shape, gpu-1.5b.toml)", f"{time.perf_counter() - start:.1f} s, loss {metrics['loss']:.3f}",
         "ok" if metrics["optimizer_steps"] == 1.0 else "FAIL"),
        ("peak memory vs estimate", f"{peak / GB:.1f} GiB measured, {est.total / GB:.1f} GiB estimated",
         "ok" if ok else "FAIL"),
    ]  # fmt: skip


def check_hf(model, tok) -> list[Row]:
    from azr.config import RolloutConfig
    from azr.rollout.base import Sampling
    from azr.rollout.hf import HFBackend

    backend = HFBackend(model, tok, RolloutConfig(bf16=True), ignore_eos=True)
    backend.generate(["warm up"], Sampling(max_new_tokens=4, seed=0))
    backend.generate([f"prompt {i}" for i in range(16)], Sampling(max_new_tokens=128, seed=0))
    return [("hf decoding (16 x 128 tokens)", f"{backend.last_stats['tokens_per_s']:.0f} tokens/s", "ok")]


def check_vllm(model, tok) -> list[Row]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return [("vLLM", "vllm is not installed (pip install 'azr[vllm]')", "skipped")]
    from azr.config import RolloutConfig
    from azr.rollout.base import Sampling
    from azr.rollout.vllm import VLLMBackend
    from azr.training.trainer import TrainBatch, Trainer

    cfg = gpu_config(prompt=256, reply=128)
    backend = VLLMBackend(model, tok, RolloutConfig(bf16=False, vllm_gpu_memory_utilization=0.3))
    out = backend.generate(
        [f"prompt {i}" for i in range(64)], Sampling(temperature=1.0, max_new_tokens=128, seed=0)
    )
    speed = backend.last_stats["tokens_per_s"]
    same = backend.generate(["one prompt"] * 8, Sampling(temperature=1.0, max_new_tokens=16, seed=1))
    distinct = len({tuple(c.token_ids) for c in same})
    trainer = Trainer(model, tok, cfg.training, cfg.algorithm, dataclasses.replace(cfg.model, lora=False))
    sample = out[:8]
    batch = TrainBatch(
        [c.prompt_ids for c in sample], [c.token_ids for c in sample], [0.0] * 8, temperatures=[1.0] * 8
    )
    ref = trainer.logprobs(batch)
    gap = max(
        abs(a - b) for c, r in zip(sample, ref, strict=True) for a, b in zip(c.logprobs, r, strict=True)
    )
    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    before = [c.token_ids for c in backend.generate(["sync check"], greedy)]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    backend.update_weights(model)
    after = [c.token_ids for c in backend.generate(["sync check"], greedy)]
    return [
        ("vLLM decoding (64 x 128 tokens)", f"{speed:.0f} tokens/s", "ok"),
        ("vLLM vs trainer log-probs", f"max gap {gap:.3f}", "ok" if gap < 0.1 else "FAIL"),
        ("vLLM duplicate prompts", f"{distinct} distinct replies of 8", "ok" if distinct > 1 else "FAIL"),
        ("vLLM weight sync", "output changed" if after != before else "output unchanged", "ok" if after != before else "FAIL"),
    ]  # fmt: skip


class OneRank(Dist):
    """One rank that counts as distributed: FSDP2 needs a process group, and one rank of NCCL is enough here."""

    @property
    def enabled(self) -> bool:
        return True


def check_fsdp_nccl() -> list[Row]:
    import torch.distributed as td

    from azr.config import AlgorithmConfig, TrainingConfig
    from azr.models import tiny_model
    from azr.training import checkpoint
    from azr.training.trainer import TrainBatch, Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29513")
    torch.cuda.set_device(0)
    td.init_process_group("nccl", rank=0, world_size=1)
    try:
        training = TrainingConfig(device="cuda", fsdp=True, lr=1e-3, bf16_autocast=True)
        trainer = Trainer(*tiny_model(hidden=256, layers=2), training, AlgorithmConfig(), dist=OneRank())
        trainer.step(TrainBatch([[5, 6, 7]], [[8, 9, 10]], [1.0], temperatures=[0.7]))
        with tempfile.TemporaryDirectory() as run_dir:
            path = checkpoint.save(run_dir, 1, trainer, sharded=trainer.sharded_state())
            fresh = Trainer(*tiny_model(hidden=256, layers=2), training, AlgorithmConfig(), dist=OneRank())
            checkpoint.load(path, fresh)
        same = all(
            torch.equal(a, b)
            for a, b in zip(trainer.model.parameters(), fresh.model.parameters(), strict=True)
        )
        result = "weights equal after resume" if same else "weights differ after resume"
        return [("FSDP2 over NCCL (1 rank): update, save, resume", result, "ok" if same else "FAIL")]
    finally:
        td.destroy_process_group()


def run(name: str, check: Callable[[], list[Row]]) -> list[Row]:
    try:
        return check()
    except Exception as e:  # a failed check is a row of the table, not the end of the others
        return [(name, f"{type(e).__name__}: {str(e)[:120]}", "FAIL")]


def main() -> int:
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device: the GPU rows are skipped (the CPU tests of the GPU path ran above)")
        return 0
    model, tok = qwen_1_5b_shape()
    rows = run("update", lambda: check_update(model, tok))
    model = model.to(torch.bfloat16)
    rows += run("hf decoding", lambda: check_hf(model, tok))
    rows += run("vLLM", lambda: check_vllm(model, tok))
    model = None  # the FSDP check builds its own
    torch.cuda.empty_cache()
    rows += run("FSDP2 over NCCL", check_fsdp_nccl)
    width = max(len(r[0]) for r in rows)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}")
    for name, result, status in rows:
        print(f"| {name:<{width}} | {result:<60} | {status:<7} |")
    return int(any(status == "FAIL" for _, _, status in rows))


if __name__ == "__main__":
    sys.exit(main())
