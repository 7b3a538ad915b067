"""Two CPU processes (gloo) against one: the update, the advantages and a short run with resume.

The workers run in spawned processes (``torch.multiprocessing``) and write what they saw to files; the single-process
references are computed here. One spawn covers every check, so the ~5 s start-up of two interpreters is paid once.
"""

from __future__ import annotations

import io
import json
import os

import pytest
import torch
from rich.console import Console

from azr.config import AlgorithmConfig, Config
from azr.distributed import Dist, metrics_view
from azr.metrics import read_metrics
from azr.models import tiny_model
from azr.rollout import Completion
from azr.selfplay.samples import Sample
from azr.selfplay.step import SelfPlay
from azr.store import TaskStore
from azr.training.trainer import Trainer
from azr.types import GROUPS
from dist_helpers import ALGO, TRAIN, WORLD, batch, free_port, part, spawn
from loop_helpers import small_config_file


def samples() -> list[Sample]:
    """Twelve replies over the six groups with distinct rewards and lengths."""
    out = []
    for i in range(12):
        kind, role = GROUPS[i % 6]
        tokens = list(range(1 + i % 4))
        c = Completion("x", [1], tokens, [0.0] * len(tokens), "eos")
        s = Sample(kind, role, "p", c, None, format_ok=True, success=i % 3 == 0)
        s.reward = float(i % 5) - 1.5
        out.append(s)
    return out


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def _worker(rank: int, port: int, out_dir: str, model_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as td

    from azr.distributed import from_env

    td.init_process_group("gloo")  # started here, so the runs below leave it open for the next one
    dist = from_env("cpu")
    out = {"rank": dist.rank, "world": dist.world_size}
    # 0. Ranks started without --run-dir name different runs/<time> folders: all take rank 0's.
    from pathlib import Path

    from azr.distributed import shared_run_dir

    out["run_dir"] = str(shared_run_dir(Path(f"runs/2026-rank{rank}"), dist))
    # 1. One update on this rank's part of the batch.
    model, tok = tiny_model()
    trainer = Trainer(model, tok, TRAIN, ALGO, dist=dist)
    full = batch()
    metrics = trainer.step(full.subset(part(len(full), rank)))
    out["tokens"], out["sequences"] = metrics["tokens"], metrics["sequences"]
    torch.save(params(trainer.model), f"{out_dir}/params-{rank}.pt")
    # 2. Two PPO mini-batches, one rank holding a single sequence: no hang, the ranks stay equal.
    model, tok = tiny_model()
    algo = AlgorithmConfig(entropy_coef=0.0, ppo_mini_batches=2, kl_coef=0.1)
    trainer = Trainer(model, tok, TRAIN, algo, dist=dist)
    small = batch(3)
    trainer.step(small.subset([0, 1] if rank == 0 else [2]))
    torch.save(params(trainer.model), f"{out_dir}/ppo-{rank}.pt")
    # 3. TRR++ over both ranks' samples.
    mine = [s for i, s in enumerate(samples()) if i % WORLD == rank]
    SelfPlay(Config(), None, None, None, None, seed=0, dist=dist).assign_advantages(mine)
    out["advantages"] = [s.advantage for s in mine]
    out["metrics_view"] = len(metrics_view(mine, dist))
    # 4. A run of one step, then a resume to step 2.
    from azr.loop import train, with_steps
    from azr.rollout import ScriptedBackend
    from loop_helpers import cfg_for, pure_reply

    factory = lambda m, t: ScriptedBackend(pure_reply, tokenizer=t)  # noqa: E731
    run_dir = f"{out_dir}/run"
    console = Console(file=io.StringIO(), width=200)
    out["first"] = train(cfg_for(model_dir, 1), Path(run_dir), console=console, backend_factory=factory)
    cfg2 = with_steps(cfg_for(model_dir, 1), 2)
    out["resumed"] = train(cfg2, Path(run_dir), resume=True, console=console, backend_factory=factory)
    out["console"] = console.file.getvalue()
    with open(f"{out_dir}/out-{rank}.json", "w") as f:
        json.dump(out, f)
    td.destroy_process_group()


@pytest.fixture(scope="module")
def spawned(tmp_path_factory, model_dir):
    """Run the two workers once; returns (their outputs, the output directory)."""
    out_dir = tmp_path_factory.mktemp("ddp")
    return spawn(_worker, out_dir, model_dir), out_dir


def test_update_equals_the_single_process_update_on_the_union(spawned):
    """Each rank normalises by the global token count and the gradients are summed: the same AdamW step."""
    outs, out_dir = spawned
    torch.set_num_threads(1)
    model, tok = tiny_model()
    single = Trainer(model, tok, TRAIN, ALGO)
    full = batch()
    metrics = single.step(full)
    want = params(single.model)
    for rank in range(WORLD):
        got = torch.load(out_dir / f"params-{rank}.pt")
        for k in want:
            torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=0, msg=f"rank {rank} {k}")
        assert outs[rank]["tokens"] == metrics["tokens"] and outs[rank]["sequences"] == len(full)
    initial = params(tiny_model()[0])
    assert any(not torch.equal(initial[k], want[k]) for k in want), "the update changed nothing"


def test_ranks_stay_equal_with_ppo_mini_batches_and_an_uneven_split(spawned):
    _, out_dir = spawned
    a, b = (torch.load(out_dir / f"ppo-{r}.pt") for r in range(WORLD))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_advantages_are_those_of_the_global_batch(spawned):
    outs, _ = spawned
    union = samples()
    SelfPlay(Config(), None, None, None, None, seed=0).assign_advantages(union)
    for rank in range(WORLD):
        want = [s.advantage for i, s in enumerate(union) if i % WORLD == rank]
        assert outs[rank]["advantages"] == pytest.approx(want, abs=1e-6)
        assert outs[rank]["metrics_view"] == len(union)


def test_ranks_agree_on_rank_0s_run_directory(spawned):
    outs, _ = spawned
    assert [o["run_dir"] for o in outs] == ["runs/2026-rank0"] * WORLD


def test_gradients_are_summed_in_buckets():
    """One all-reduce per bucket: runs of one dtype up to the byte limit, a larger tensor alone, order kept."""
    from azr.distributed import grad_buckets

    grads = [
        torch.zeros(10),
        torch.zeros(10),
        torch.zeros(40),
        torch.zeros(3, dtype=torch.float64),
        torch.zeros(5),
    ]
    got = grad_buckets(grads, max_bytes=100)
    assert [[g.numel() for g in b] for b in got] == [[10, 10], [40], [3], [5]]
    assert [g for b in got for g in b] == grads


def test_run_writes_once_and_resumes(spawned):
    outs, out_dir = spawned
    run_dir = out_dir / "run"
    assert [o["first"] for o in outs] == [0, 0] and [o["resumed"] for o in outs] == [0, 0]
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2], "one metrics line per step, none from rank 1"
    assert all(r["dist/world_size"] == WORLD for r in rows)
    assert rows[0]["count/deduction/propose"] == 2, "batch_size 2 over two ranks: one proposal each"
    assert (run_dir / "checkpoints" / "step-000002" / "state.json").is_file()
    state = json.loads((run_dir / "checkpoints" / "step-000002" / "state.json").read_text())
    assert len(state["extra_state"]["selfplay_rng_ranks"]) == WORLD
    with TaskStore(run_dir / "tasks.sqlite") as store:
        for row in rows:  # every rank's replies logged once (rank 0 writes them all)
            logged = store.rollouts(row["step"])
            assert len(logged) == sum(v for k, v in row.items() if k.startswith("count/"))
    assert not (run_dir / ".ranks").exists(), "the other ranks' store copies are removed"
    assert "step 2/2" in outs[0]["console"] and outs[1]["console"] == ""


def test_single_process_needs_no_launcher(monkeypatch):
    from azr.distributed import CPU_TRAP, from_env
    from azr.errors import AzrError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert from_env("cpu") == Dist()
    assert [Dist(r, 3).share(8) for r in range(3)] == [3, 3, 2]
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(AzrError, match="--multi_gpu") as e:
        from_env("cpu")
    assert str(e.value) == CPU_TRAP


def test_batch_smaller_than_the_world_is_refused():
    from azr.config import ConfigError
    from azr.loop import rank_config

    with pytest.raises(ConfigError, match=r"selfplay\.batch_size"):
        rank_config(Config(), Dist(0, 8))
    assert rank_config(Config(), Dist(1, 3)).selfplay.batch_size == 1  # B = 4 over 3 ranks: 2, 1, 1


ACCELERATE = ["/usr/bin/python3", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes"]
CPU_ENV = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}


@pytest.mark.parametrize(
    ("env", "parent", "expected"),
    [
        (CPU_ENV, [*ACCELERATE, "2", "-m", "azr", "train", "--steps", "1"], 2),
        (CPU_ENV, [*ACCELERATE, "1", "-m", "azr", "train"], None),
        ({**CPU_ENV, "WORLD_SIZE": "2"}, [*ACCELERATE, "2", "-m", "azr", "train"], None),  # already started
        ({"MASTER_ADDR": "127.0.0.1"}, [*ACCELERATE, "2", "-m", "azr", "train"], None),  # not --cpu
        (CPU_ENV, ["/usr/bin/python3", "-m", "azr", "train"], None),  # not under accelerate
    ],
)
def test_accelerate_cpu_processes_read_from_the_launcher(env, parent, expected):
    from azr.launch import accelerate_cpu_processes

    assert accelerate_cpu_processes(env, parent) == expected


def test_accelerate_cpu_on_several_machines_is_refused():
    from azr.errors import AzrError
    from azr.launch import accelerate_cpu_processes

    parent = [*ACCELERATE, "4", "--num_machines", "2", "-m", "azr", "train"]
    with pytest.raises(AzrError, match="torchrun --nnodes"):
        accelerate_cpu_processes(CPU_ENV, parent)


def test_accelerate_launch_cpu_runs_two_processes(tmp_path, model_dir):
    """The command as a user types it: two processes, one metrics line with dist/world_size 2, one checkpoint."""
    import subprocess
    import sys
    from pathlib import Path

    run_dir = tmp_path / "run"
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    command += ["-m", "azr", "train", "--config", str(small_config_file(tmp_path, model_dir)), "--steps", "1"]
    command += ["--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "starting 2 with torch.distributed.run" in done.stdout
    rows = read_metrics(run_dir)
    assert len(rows) == 1 and rows[0]["dist/world_size"] == 2.0
    assert len(list((run_dir / "checkpoints").iterdir())) == 1
