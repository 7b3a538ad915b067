import dataclasses
from pathlib import Path

import pytest

from azr import config as C
from azr.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_every_field_is_documented():
    C.validate(C.Config())
    for cls in C.SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


@pytest.mark.parametrize("name", ["cpu-smollm2.toml", "paper-7b.toml", "gpu-1.5b.toml"])
def test_shipped_configs_load(name):
    cfg = C.load(ROOT / "configs" / name)
    assert cfg.algorithm.advantage == "trr++"


def test_paper_config_has_paper_hyperparameters():
    cfg = C.load(ROOT / "configs" / "paper-7b.toml")
    assert (cfg.selfplay.batch_size, cfg.selfplay.n_references, cfg.selfplay.n_mc_rollouts) == (64, 6, 8)
    assert (cfg.training.lr, cfg.algorithm.clip_eps, cfg.algorithm.entropy_coef) == (1e-6, 0.2, 0.001)
    assert cfg.training.fsdp and not cfg.model.lora, "full fine-tuning, sharded, as in the paper"


def test_update_defaults_are_the_papers_single_step():
    """One optimizer step per batch, no KL, unbounded buffers, unless a run asks for more."""
    for cfg in (C.Config(), C.load(ROOT / "configs" / "paper-7b.toml")):
        a = cfg.algorithm
        assert (a.ppo_mini_batches, a.ppo_epochs, a.kl_coef, cfg.selfplay.buffer_cap) == (1, 1, 0.0, 0)
        assert a.solve_nll_coef == 0.0  # the likelihood term goes beyond the paper: off
        assert a.trace_nll_coef == 0.0  # so does the sandbox-written solve term
    cfg = C.load(None, ["algorithm.ppo_mini_batches=3", "algorithm.ppo_epochs=2", "selfplay.buffer_cap=16"])
    assert (cfg.algorithm.ppo_mini_batches, cfg.algorithm.ppo_epochs, cfg.selfplay.buffer_cap) == (3, 2, 16)


def test_toml_round_trip(tmp_path):
    cfg = C.from_dict({"training": {"lr": 3e-5, "steps": 7}, "model": {"lora": True}})
    path = tmp_path / "run.toml"
    path.write_text(C.to_toml(cfg))
    assert C.load(path) == cfg


def test_overrides_parse_typed_values():
    cfg = C.load(None, ["--training.lr=2e-5", "model.lora=true", "model.name=./my-model", "training.steps=3"])
    assert cfg.training.lr == 2e-5 and cfg.model.lora is True
    assert cfg.model.name == "./my-model" and cfg.training.steps == 3


def test_bf16_autocast_is_auto_true_or_false():
    assert C.Config().training.bf16_autocast == "auto"
    for raw, value in (("auto", "auto"), ("true", True), ("false", False)):
        assert C.load(None, [f"training.bf16_autocast={raw}"]).training.bf16_autocast == value


def test_int_is_accepted_for_float():
    assert C.load(None, ["executor.timeout_s=3"]).executor.timeout_s == 3.0


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("training.lrr=1", "training.lrr"),
        ("trainer.lr=1", "[trainer]"),
        ("training.steps=many", "training.steps"),
        ("model.lora=3", "model.lora"),
        ("training.bf16_autocast=maybe", "training.bf16_autocast"),
        ("algorithm.advantage=grpo", "algorithm.advantage"),
        ("selfplay.batch_size=0", "selfplay.batch_size"),
        ("algorithm.ppo_mini_batches=0", "algorithm.ppo_mini_batches"),
        ("algorithm.ppo_epochs=0", "algorithm.ppo_epochs"),
        ("algorithm.kl_coef=-0.1", "algorithm.kl_coef"),
        ("algorithm.solve_nll_coef=-1", "algorithm.solve_nll_coef"),
        ("algorithm.trace_nll_coef=1", "algorithm.trace_nll_coef"),
        ("selfplay.buffer_cap=3", "selfplay.buffer_cap"),  # < n_seed_tasks (16): seeding could not finish
        ("training.steps", "--section.field=value"),
    ],
)
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(C.ConfigError) as e:
        C.load(None, [override])
    assert needle in str(e.value)


OLD_SEED_TASK_KEYS = '[selfplay]\nn_seed = 5\nseed_file = "warm.jsonl"\nmax_seed_rounds = 2\n'


def test_a_run_directory_with_the_old_seed_task_keys_still_resumes(tmp_path):
    """Runs started before selfplay.n_seed, seed_file and max_seed_rounds were renamed hold a config.toml with
    the old keys: `azr train --resume` loads it (one warning per old key) and writes the new names back."""
    from azr.loop import CONFIG_FILE, prepare_config

    (tmp_path / CONFIG_FILE).write_text(OLD_SEED_TASK_KEYS)
    with pytest.warns(FutureWarning) as caught:
        cfg = prepare_config(None, [], tmp_path, resume=True)
    sp = cfg.selfplay
    assert (sp.n_seed_tasks, sp.seed_tasks_file, sp.max_seeding_rounds) == (5, "warm.jsonl", 2)
    assert sorted(str(w.message) for w in caught) == [
        f"config key {old} is now {new}" for old, new in sorted(C.RENAMED_KEYS.items())
    ]
    assert "n_seed_tasks = 5" in C.to_toml(cfg) and "n_seed =" not in C.to_toml(cfg)


def test_an_override_with_an_old_key_still_works():
    with pytest.warns(FutureWarning) as caught:
        cfg = C.load(C.DEFAULT_RECIPE, ["--selfplay.max_seed_rounds=7", "selfplay.n_seed=32"])
    assert (cfg.selfplay.max_seeding_rounds, cfg.selfplay.n_seed_tasks) == (7, 32)
    assert [str(w.message).split()[-1] for w in caught] == [
        "selfplay.max_seeding_rounds",
        "selfplay.n_seed_tasks",
    ]


def test_a_key_named_by_its_old_and_new_name_is_an_error(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[selfplay]\nn_seed = 5\nn_seed_tasks = 6\n")
    with pytest.raises(C.ConfigError, match=r"selfplay\.n_seed and selfplay\.n_seed_tasks"):
        C.load(path)
    with pytest.raises(C.ConfigError, match=r"keep selfplay\.seed_tasks_file"):
        C.load(None, ["selfplay.seed_tasks_file=a.jsonl", "selfplay.seed_file=b.jsonl"])


def test_bad_toml_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[training\nlr = 1")
    with pytest.raises(C.ConfigError, match="invalid TOML"):
        C.load(path)
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(tmp_path / "missing.toml")


def test_describe_lists_every_section():
    text = C.describe()
    for section in C.SECTIONS:
        assert f"[{section}]" in text


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


def test_azr_train_without_config_runs_the_cpu_recipe(tmp_path, monkeypatch):
    """`azr train` with no --config takes the shipped CPU recipe, which configs/cpu-smollm2.toml is."""
    import azr.loop

    seen = {}

    def fake_train(cfg, run_dir, resume=False):
        seen["cfg"] = cfg
        return 0

    monkeypatch.setattr(azr.loop, "train", fake_train)
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--steps", "1"]) == 0
    repo_copy = C.load(Path(__file__).resolve().parents[1] / "configs" / "cpu-smollm2.toml")
    assert seen["cfg"] == azr.loop.with_steps(repo_copy, 1)
    assert seen["cfg"].training.lr == repo_copy.training.lr != C.Config().training.lr
    assert seen["cfg"].selfplay.n_shots == 2 and seen["cfg"].rollout.temperature == 0.7
