"""``training.fsdp``: the policy sharded with FSDP2 over two CPU processes (gloo) against one unsharded process.

The workers (spawned once) do an update, save a checkpoint, load it into a fresh sharded trainer, update again,
generate greedily with different lengths on each rank, and run the loop for one step plus a resumed one; the
single-process references are computed here.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console

from azr.config import ConfigError, ModelConfig, from_dict
from azr.metrics import read_metrics
from azr.models import tiny_model
from azr.training import checkpoint
from azr.training.trainer import Trainer
from dist_helpers import ALGO, TRAIN, WORLD, batch, part, spawn

# Micro-batches of 1: the ranks hold 4 and 3 sequences, so rank 1 runs one idle pass to match rank 0's collectives.
FSDP = dataclasses.replace(TRAIN, fsdp=True, micro_batch_size=1)
PROMPT = [[5, 17, 42, 9]]


def second_batch():
    return batch(5)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The whole weights; under FSDP read from the gathered layout the trainer keeps between updates."""
    return {k: v.detach().clone() for k, v in trainer.model.named_parameters()}


def greedy(model, n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor(PROMPT), max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, len(PROMPT[0]) :].tolist()


def _worker(rank: int, port: int, out_dir: str, model_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as td

    from azr.distributed import from_env

    td.init_process_group("gloo")
    dist = from_env("cpu")
    out: dict = {}
    # 0. Gathering in bf16 leaves the root's inputs alone: the temperatures stay fp32.
    from azr.training.sharding import Sharded

    bf16 = Sharded(tiny_model()[0], torch.device("cpu"), WORLD, bf16=True)
    t = bf16.run(lambda x: x, torch.tensor([0.7]))
    out["temperature"] = [str(t.dtype), t.item()]
    # 1. One sharded update on this rank's part, a checkpoint, a fresh trainer from it, a second update.
    model, tok = tiny_model()
    trainer = Trainer(model, tok, FSDP, ALGO, dist=dist)
    out["sharded"] = type(trainer.params[0]).__name__
    full = batch()
    trainer.step(full.subset(part(len(full), rank)))
    torch.save(weights(trainer), f"{out_dir}/one-{rank}.pt")
    model, tok = tiny_model()
    checkpointed = Trainer(model, tok, FSDP, ALGO, ModelConfig(gradient_checkpointing=True), dist=dist)
    out["layerwise"] = checkpointed.layerwise
    checkpointed.step(full.subset(part(len(full), rank)))
    torch.save(weights(checkpointed), f"{out_dir}/ckpt-{rank}.pt")
    state = trainer.sharded_state()  # a collective
    if rank == 0:
        checkpoint.save(f"{out_dir}/ckpt", 1, trainer, sharded=state)
    td.barrier()
    model, tok = tiny_model()
    fresh = Trainer(model, tok, FSDP, ALGO, dist=dist)
    checkpoint.load(checkpoint.latest(f"{out_dir}/ckpt"), fresh)
    second = second_batch()
    fresh.step(second.subset(part(len(second), rank)))
    torch.save(weights(fresh), f"{out_dir}/two-{rank}.pt")
    # 2. Between updates each rank generates on its own, a different number of tokens: no collective, no hang.
    out["greedy"] = greedy(fresh.model, 3 + 4 * rank)
    from azr.rollout.vllm import merged_weights

    synced = dict(merged_weights(fresh.model))  # what a vLLM engine would load: whole plain tensors
    out["sync"] = sorted({type(v).__name__ for v in synced.values()})
    torch.save(synced, f"{out_dir}/sync-{rank}.pt")
    # 3. The loop: one step, then a resumed second one.
    from azr.loop import train, with_steps
    from azr.rollout import ScriptedBackend
    from loop_helpers import cfg_for, pure_reply

    factory = lambda m, t: ScriptedBackend(pure_reply, tokenizer=t)  # noqa: E731
    cfg = cfg_for(model_dir, 1)
    cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, fsdp=True))
    console = Console(file=io.StringIO(), width=200)
    run_dir = Path(out_dir) / "run"
    out["first"] = train(cfg, run_dir, console=console, backend_factory=factory)
    out["resumed"] = train(with_steps(cfg, 2), run_dir, resume=True, console=console, backend_factory=factory)
    with open(f"{out_dir}/out-{rank}.json", "w") as f:
        json.dump(out, f)
    td.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, model_dir):
    out_dir = tmp_path_factory.mktemp("fsdp")
    return spawn(_worker, out_dir, model_dir), out_dir


@pytest.fixture(scope="module")
def single():
    """The unsharded single-process trainer after the union of the first batch, its weights, then the second."""
    torch.set_num_threads(1)
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO)
    trainer.step(batch())
    one = weights(trainer)
    optimizer = copy.deepcopy(trainer.optimizer.state_dict())  # its tensors change in place at the next step
    trainer.step(second_batch())
    return trainer, one, optimizer


def assert_same(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), what
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=0, msg=f"{what}: {k}")


def test_bf16_gathering_keeps_the_temperatures_fp32(spawned):
    outs, _ = spawned
    assert all(o["temperature"] == ["torch.float32", pytest.approx(0.7, abs=1e-7)] for o in outs)


def test_parameters_are_sharded(spawned):
    outs, _ = spawned
    assert [o["sharded"] for o in outs] == ["DTensor"] * WORLD


def test_sharded_update_equals_the_single_process_update(spawned, single):
    outs, out_dir = spawned
    _, one, _ = single
    for rank in range(WORLD):
        assert_same(torch.load(out_dir / f"one-{rank}.pt"), one, f"rank {rank}")
        assert outs[rank]["layerwise"], "the checkpointed trainer runs azr.training.layerwise under FSDP"
        assert_same(
            torch.load(out_dir / f"ckpt-{rank}.pt"), one, f"rank {rank}, layer-by-layer checkpointing"
        )
    assert any(not torch.equal(one[k], v) for k, v in tiny_model()[0].named_parameters()), "nothing moved"


def test_checkpoint_round_trip_keeps_the_adamw_state(spawned, single):
    """The second AdamW step depends on the first one's moments: equal only if they survived save and load."""
    _, out_dir = spawned
    trainer, _, _ = single
    want = weights(trainer)
    for rank in range(WORLD):
        assert_same(torch.load(out_dir / f"two-{rank}.pt"), want, f"rank {rank}")


def test_checkpoint_is_in_the_single_process_format(spawned, single):
    _, out_dir = spawned
    _, one, optimizer = single
    model, tok = tiny_model()
    plain = Trainer(model, tok, TRAIN, ALGO)
    checkpoint.load(checkpoint.latest(out_dir / "ckpt"), plain)
    assert_same(weights(plain), one, "weights")
    loaded = plain.optimizer.state_dict()
    assert loaded["param_groups"][0]["params"] == optimizer["param_groups"][0]["params"]
    for i, s in optimizer["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(loaded["state"][i][key], s[key], atol=1e-6, rtol=0)


def test_ranks_generate_alone_between_updates(spawned, single):
    outs, _ = spawned
    trainer, _, _ = single
    for rank in range(WORLD):
        assert outs[rank]["greedy"] == greedy(trainer.model, 3 + 4 * rank)


def test_weight_sync_sees_whole_tensors(spawned, single):
    outs, out_dir = spawned
    trainer, _, _ = single
    assert [o["sync"] for o in outs] == [["Parameter"]] * WORLD
    from azr.rollout.vllm import merged_weights

    assert_same(torch.load(out_dir / "sync-1.pt"), dict(merged_weights(trainer.model)), "vLLM weights")


def test_loop_runs_and_resumes_sharded(spawned):
    outs, out_dir = spawned
    assert [(o["first"], o["resumed"]) for o in outs] == [(0, 0)] * WORLD
    rows = read_metrics(out_dir / "run")
    assert [r["step"] for r in rows] == [1, 2] and all(r["dist/world_size"] == WORLD for r in rows)
    assert (out_dir / "run" / "checkpoints" / "step-000002" / "optimizer.pt").is_file()


def test_fsdp_needs_several_processes():
    model, tok = tiny_model()
    with pytest.raises(ValueError, match="several processes"):
        Trainer(model, tok, FSDP, ALGO)


def test_fsdp_refuses_lora_and_kl():
    for extra in ({"model": {"lora": True}}, {"algorithm": {"kl_coef": 0.1}}):
        with pytest.raises(ConfigError, match=r"training\.fsdp"):
            from_dict({"training": {"fsdp": True}, **extra})


def test_accelerate_use_fsdp_turns_sharding_on(monkeypatch):
    from azr.distributed import Dist
    from azr.loop import _launcher_fsdp

    console = Console(file=io.StringIO())
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert _launcher_fsdp(from_dict({}), Dist(0, 2, 0), console).training.fsdp
    assert "FSDP2" in console.file.getvalue()
    assert not _launcher_fsdp(from_dict({}), Dist(), console).training.fsdp, "one process: nothing to shard"
    with pytest.raises(ConfigError, match="lora"):
        _launcher_fsdp(from_dict({"model": {"lora": True}}), Dist(0, 2, 0), console)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert not _launcher_fsdp(from_dict({}), Dist(0, 2, 0), console).training.fsdp
