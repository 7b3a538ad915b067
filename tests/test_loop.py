"""The training loop end to end on a tiny model saved to disk: steps, checkpoints, resume, crash recovery."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from azr.cli import main
from azr.config import ConfigError, from_dict
from azr.loop import _update, with_steps
from azr.metrics import read_metrics
from azr.rollout import ScriptedBackend
from azr.store import TaskStore
from azr.training.checkpoint import latest, list_checkpoints
from loop_helpers import cfg_for, run


def weights(run_dir):
    return load_file(str(latest(run_dir) / "model" / "model.safetensors"))


def ppo_cfg(model_dir, steps: int):
    """Several PPO steps per batch, a KL term and a buffer cap: all of them must survive a resume."""
    extra = {"algorithm": {"ppo_mini_batches": 2, "kl_coef": 0.05}, "selfplay": {"buffer_cap": 3}}
    return from_dict(extra, cfg_for(model_dir, steps))


def live_hashes(run_dir):
    """The live tasks' hashes, the live counts per type and how many tasks the cap evicted."""
    with TaskStore(run_dir / "tasks.sqlite") as store:
        evicted = store._db.execute("SELECT COUNT(*) FROM tasks WHERE evicted_at IS NOT NULL").fetchone()[0]
        return [t.extra["hash"] for t in store.iter_tasks()], store.counts(), evicted


def test_train_resume_matches_uninterrupted_run(tmp_path, model_dir):
    straight = tmp_path / "straight"
    code, out = run(ppo_cfg(model_dir, 3), straight)
    assert code == 0, out
    assert [r["step"] for r in read_metrics(straight)] == [1, 2, 3]
    assert "step 3/3" in out
    initial = load_file(str(model_dir / "model.safetensors"))
    final = weights(straight)
    assert any(not torch.equal(initial[k], final[k]) for k in final), "parameters did not change"

    row = read_metrics(straight)[-1]
    assert row["train/optimizer_steps"] == 2 and row["train/kl"] > 0

    split = tmp_path / "split"
    assert run(ppo_cfg(model_dir, 2), split)[0] == 0
    assert run(with_steps(ppo_cfg(model_dir, 2), 3), split, resume=True)[0] == 0
    assert [r["step"] for r in read_metrics(split)] == [1, 2, 3]
    resumed = weights(split)
    for k in final:
        assert torch.allclose(final[k], resumed[k], atol=1e-6), k
    hashes, counts, evicted = live_hashes(straight)
    assert live_hashes(split) == (hashes, counts, evicted)
    assert max(counts.values()) <= 3 and evicted > 0


def test_update_scores_each_sample_at_its_sampling_temperature():
    """The loop hands the trainer one temperature per sequence, the one its sample was drawn at."""
    from types import SimpleNamespace

    from azr.rollout import Completion
    from azr.selfplay.samples import Sample, StepResult
    from azr.types import Role, TaskType

    def sample(role, tokens, temperature):
        completion = Completion("r", [1, 2], tokens, [0.0] * len(tokens), "eos")
        return Sample(
            TaskType.DEDUCTION, role, "p", completion, None, True, advantage=0.5, temperature=temperature
        )

    seen = []
    trainer = SimpleNamespace(model=None, step=lambda batch: seen.append(batch) or {"loss": 0.1})
    backend = ScriptedBackend(["x"])
    fake_run = SimpleNamespace(trainer=trainer, backend=backend)
    samples = [sample(Role.PROPOSE, [3, 4], 0.7), sample(Role.SOLVE, [], 0.7), sample(Role.SOLVE, [5], 0.0)]
    metrics = _update(fake_run, StepResult(1, samples, []), SimpleNamespace(callback=lambda *a: None))
    (batch,) = seen
    assert batch.temperatures == [0.7, 0.0] and batch.completion_ids == [[3, 4], [5]]  # empty replies dropped
    assert metrics["train/loss"] == 0.1 and backend.weight_updates == 1


def test_crash_rewinds_store_and_metrics(tmp_path, model_dir):
    run_dir = tmp_path / "run"
    capped = from_dict({"selfplay": {"buffer_cap": 3}}, cfg_for(model_dir, 3, save_every=2))
    assert run(capped, run_dir)[0] == 0
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 3]
    # A crash after step 3 was logged but before its checkpoint: the newest checkpoint is step 2.
    shutil.rmtree(latest(run_dir))
    store = TaskStore(run_dir / "tasks.sqlite")
    assert store.max_step() == 3
    lost = [(r.prompt, r.reply, r.reward) for r in store.rollouts(3)]
    store.close()
    code, out = run(with_steps(capped, 4), run_dir, resume=True)
    assert code == 0, out
    assert "resumed at step 2" in out
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3, 4]
    store = TaskStore(run_dir / "tasks.sqlite")
    steps = [r.step for r in store.rollouts()]
    assert sorted(set(steps)) == [1, 2, 3, 4] and steps.count(3) == steps.count(1)
    assert max(store.counts().values()) <= 3
    # The replayed step drew its tasks from the rewound (un-evicted) buffers: the same prompts and replies.
    assert [(r.prompt, r.reply, r.reward) for r in store.rollouts(3)] == lost


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--training.lrr=1", "--run-dir", str(tmp_path / "a")]) == 2
    assert main(["train", "--training.steps=many", "--run-dir", str(tmp_path / "b")]) == 2
    assert main(["train", "--model", "./no/such/model", "--run-dir", str(tmp_path / "c")]) == 2
    assert main(["train", "--resume", str(tmp_path / "missing")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 4, lines
    assert "training.lrr" in lines[0] and "training.steps" in lines[1] and "not found" in lines[2]


def test_help_config_lists_keys(capsys):
    assert main(["train", "--help-config"]) == 0
    assert "micro_batch_size" in capsys.readouterr().out


def test_help_config_shows_the_values_the_command_uses(capsys):
    """Without --config, azr train runs the CPU recipe: --help-config used to print the dataclass defaults
    (lr 1e-6, temperature 1.0) instead of the recipe's (2e-5, 0.7)."""
    from azr.config import DEFAULT_RECIPE, load

    recipe = load(DEFAULT_RECIPE)
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert f"  lr = {recipe.training.lr}  #" in out and "(dataclass default 1e-06)" in out
    assert f"  temperature = {recipe.rollout.temperature}  #" in out
    assert main(["train", "--help-config", "--training.lr=3e-5"]) == 0
    assert "  lr = 3e-05  #" in capsys.readouterr().out


def test_resolved_config_is_saved_and_eval_is_logged(tmp_path, model_dir, shared_data, monkeypatch):
    import azr.evaluation

    forms = []

    def spy(*args, **kw):
        forms.append(kw["demo_think"])
        return real(*args, **kw)

    real = azr.evaluation.evaluate
    monkeypatch.setattr(azr.evaluation, "evaluate", spy)
    run_dir = tmp_path / "cfg"
    cfg = cfg_for(model_dir, 1)
    logging = {
        "eval_every": 1,
        "eval_limit": 2,
        "eval_benches": "cruxeval-o,cruxeval-i,probe",
        "eval_data_dir": str(shared_data / "benchmarks"),
        "eval_demo_think": "trace",
        "progress": False,
    }
    cfg = from_dict({"logging": logging}, cfg)
    assert run(cfg, run_dir)[0] == 0
    assert forms == ["trace"]  # the demonstrations of the in-training check carry the sandbox's trace
    row = read_metrics(run_dir)[-1]
    assert row["eval/cruxeval-o"] == 0.0 and "eval/cruxeval-i" in row  # scripted replies answer other tasks
    assert "eval/probe" in row and "eval/probe/induction" in row
    text = (run_dir / "config.toml").read_text()
    assert str(model_dir) in text
    state = json.loads((latest(run_dir) / "state.json").read_text())
    assert state["step"] == 1


def test_unknown_in_training_benchmark_is_refused_at_start(tmp_path, model_dir):
    cfg = from_dict({"logging": {"eval_every": 1, "eval_benches": "cruxeval-o,nope"}}, cfg_for(model_dir, 1))
    with pytest.raises(ConfigError, match=r"logging\.eval_benches"):
        run(cfg, tmp_path / "bad")
    with pytest.raises(ConfigError, match=r"logging\.eval_demo_think: 'steps' is not one of sentence, trace"):
        from_dict({"logging": {"eval_demo_think": "steps"}}, cfg_for(model_dir, 1))
