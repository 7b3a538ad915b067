"""Whole self-play steps: scripted replies (no model) and a tiny random model, with the real sandbox and store."""

from __future__ import annotations

import statistics

import pytest
import torch

from azr.rollout import ScriptedBackend, make_backend
from azr.selfplay.step import SelfPlay
from azr.types import GROUPS, Role, TaskType, group_name
from selfplay_helpers import B, make_cfg, scripted_reply, seeded_store


def test_two_scripted_steps(tmp_path, executor, tiny):
    _, tokenizer = tiny
    counter = [0]
    backend = ScriptedBackend(lambda p: scripted_reply(p, counter), tokenizer=tokenizer)
    cfg = make_cfg()
    store = seeded_store(tmp_path, executor)
    sp = SelfPlay(cfg, backend, executor, store, tokenizer, seed=0)
    before = store.count()
    for step in (1, 2):
        result = sp.step(step)
        groups = {g: [s for s in result.samples if s.group == g] for g in GROUPS}
        assert all(len(v) == B for v in groups.values()), {g: len(v) for g, v in groups.items()}
        check_rewards(result.samples, cfg)
        check_advantages(result.samples)
        check_reward_std(result)
    assert store.count() > before
    assert store.count(TaskType.DEDUCTION) > 1 and store.count(TaskType.INDUCTION) > 1
    assert len(store.rollouts(2)) == 6 * B
    # Monte-Carlo solves are generated (B real solves per type plus N_MC per valid proposal) but not trained on.
    valid = [s for s in result.samples if s.role is Role.PROPOSE and s.success]
    assert valid and all(0.0 <= s.role_reward <= 1.0 for s in valid)
    assert any(0.0 < s.role_reward < 1.0 for s in valid), "alternating solves should give a learnable task"


def check_rewards(samples, cfg):
    for s in samples:
        if not s.format_ok:
            assert s.reward == cfg.algorithm.format_penalty
        elif not s.success:
            assert s.reward == cfg.algorithm.wrong_penalty
        elif s.role is Role.SOLVE:
            assert s.reward == 1.0
        else:
            assert s.reward == s.role_reward


def check_advantages(samples):
    for g in GROUPS:
        adv = torch.tensor([s.advantage for s in samples if s.group == g])
        rewards = torch.tensor([s.reward for s in samples if s.group == g])
        assert abs(float(adv.mean())) < 1e-5
        if float(rewards.std()) == 0:
            assert torch.all(adv == 0)


def check_reward_std(result):
    """reward_std is the Bessel-corrected spread of the rewards; advantage_std that of the advantages."""
    for g in GROUPS:
        rewards = [s.reward for s in result.samples if s.group == g]
        advantages = torch.tensor([s.advantage for s in result.samples if s.group == g])
        name = group_name(*g)
        assert result.metrics[f"reward_std/{name}"] == pytest.approx(statistics.stdev(rewards), abs=1e-9)
        assert result.metrics[f"advantage_std/{name}"] == pytest.approx(float(advantages.std(unbiased=False)))


def test_likelihood_term_adds_correct_mc_solves_of_learnable_tasks(tmp_path, executor, tiny):
    """solve_nll_coef > 0: the correct Monte-Carlo solves of tasks with some but not all solves right join the
    update with the fixed advantage, outside TRR++ (the six groups are unchanged); 0 adds nothing."""
    _, tokenizer = tiny
    runs = {}
    for coef in (0.0, 0.5):
        counter = [0]
        backend = ScriptedBackend(lambda p, c=counter: scripted_reply(p, c), tokenizer=tokenizer)
        cfg = make_cfg(algorithm={"solve_nll_coef": coef})
        sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path / str(coef), executor), tokenizer, seed=0)
        runs[coef] = sp.step(1)
    plain, extra = runs[0.0], runs[0.5]
    assert not any(s.auxiliary for s in plain.samples)
    assert "solve/likelihood_count/deduction" not in plain.metrics
    aux = [s for s in extra.samples if s.auxiliary]
    assert aux, "alternating solves make learnable tasks with correct Monte-Carlo solves"
    assert all(s.role is Role.SOLVE and s.success and s.advantage == 0.5 for s in aux)
    assert sum(extra.metrics[f"solve/likelihood_count/{k.value}"] for k in TaskType) == len(aux)
    core = [s for s in extra.samples if not s.auxiliary]
    assert [(s.group, s.advantage) for s in core] == [(s.group, s.advantage) for s in plain.samples]
    check_advantages(core)
    # every auxiliary reply is a correct solve of a task that is neither always nor never solved
    for s in aux:
        owner = next(p for p in extra.samples if p.role is Role.PROPOSE and p.task is s.task)
        assert 0.0 < owner.role_reward < 1.0


def test_policy_gradient_switch_keeps_only_the_likelihood_terms(tmp_path, executor, tiny):
    """algorithm.policy_gradient = false (the ablation): every TRR++ sample has advantage 0 while rewards and
    metrics are those of the default step; the likelihood samples keep their fixed advantage."""
    _, tokenizer = tiny
    runs = {}
    for pg in (True, False):
        counter = [0]
        backend = ScriptedBackend(lambda p, c=counter: scripted_reply(p, c), tokenizer=tokenizer)
        cfg = make_cfg(algorithm={"solve_nll_coef": 0.5, "policy_gradient": pg})
        sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path / str(pg), executor), tokenizer, seed=0)
        runs[pg] = sp.step(1)
    on, off = runs[True], runs[False]
    core_on = [s for s in on.samples if not s.auxiliary]
    core_off = [s for s in off.samples if not s.auxiliary]
    assert any(s.advantage != 0 for s in core_on)
    assert core_off and all(s.advantage == 0.0 for s in core_off)
    assert [s.reward for s in core_off] == [s.reward for s in core_on]
    aux = [s for s in off.samples if s.auxiliary]
    assert aux and all(s.advantage == 0.5 for s in aux)

    def same(m: dict) -> dict:
        return {k: v for k, v in m.items() if not k.startswith(("perf/", "advantage"))}

    assert same(off.metrics) == same(on.metrics)
    with pytest.raises(Exception, match="policy_gradient"):
        make_cfg(algorithm={"policy_gradient": False})


def test_trace_term_adds_sandbox_written_solves(tmp_path, executor, tiny):
    """trace_nll_coef > 0: each new deduction/abduction task not always solved gets one solve reply written by the
    sandbox (a trace, then the gold answer), after its Monte-Carlo prompt, scored at temperature 1 with the fixed
    advantage; the executor accepts its answer, and the TRR++ samples are those of the same step without it."""
    from azr.tasks.validate import score_solutions

    _, tokenizer = tiny
    runs = {}
    for coef in (0.0, 0.5):
        counter = [0]
        backend = ScriptedBackend(lambda p, c=counter: scripted_reply(p, c), tokenizer=tokenizer)
        cfg = make_cfg(selfplay={"n_shots": 1, "demo_trace": 12}, algorithm={"trace_nll_coef": coef})
        sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path / str(coef), executor), tokenizer, seed=0)
        runs[coef] = sp.step(1)
    plain, extra = runs[0.0], runs[0.5]
    assert "solve/trace_count/deduction" not in plain.metrics
    traced = [s for s in extra.samples if s.auxiliary == "trace"]
    assert {s.task_type for s in traced} == {TaskType.DEDUCTION, TaskType.ABDUCTION}
    assert sum(extra.metrics[f"solve/trace_count/{k.value}"] for k in TaskType) == len(traced)
    for s in traced:
        assert (s.role, s.advantage, s.temperature, s.format_ok, s.success) == (
            Role.SOLVE,
            0.5,
            1.0,
            True,
            True,
        )
        assert "line by line" in s.completion.text and s.completion.text.endswith("</answer>")
        assert tokenizer.decode(s.completion.token_ids) == s.completion.text
        assert score_solutions(executor, s.task_type, [s.task], [s.parsed], n_visible=5) == [True]
        owner = next(p for p in extra.samples if p.role is Role.PROPOSE and p.task is s.task)
        assert owner.success and owner.role_reward < 1.0
        mc_prompt = next(x.prompt for x in extra.samples if x.task is s.task and x.role is Role.SOLVE)
        assert s.prompt == mc_prompt
    core = [s for s in extra.samples if not s.auxiliary]
    assert [(s.group, s.advantage) for s in core] == [(s.group, s.advantage) for s in plain.samples]


def test_parser_errors_are_counted_apart_and_left_out(tmp_path, executor, tiny, monkeypatch):
    """A parser that raises on the deduction solves: those replies get no reward and no update, count under
    solve/parser_error_rate/deduction and not in the format rate; every sample keeps its sampling temperature."""
    from azr.tasks import parsing

    real = parsing._parse_solution

    def buggy(kind, text):
        if "compute" in text:  # the scripted deduction solver's reply
            raise IndexError("a parser bug")
        return real(kind, text)

    monkeypatch.setattr(parsing, "_parse_solution", buggy)
    _, tokenizer = tiny
    counter = [0]
    backend = ScriptedBackend(lambda p: scripted_reply(p, counter), tokenizer=tokenizer)
    cfg = make_cfg(rollout={"temperature": 0.7})
    sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path, executor), tokenizer, seed=0)
    result = sp.step(1)
    m = result.metrics
    assert not [s for s in result.samples if s.group == (TaskType.DEDUCTION, Role.SOLVE)]
    assert m["solve/parser_error_rate/deduction"] == 1.0 and m["count/deduction/solve"] == 0
    assert "solve/format_rate/deduction" not in m and "reward/deduction/solve" not in m
    assert m["solve/parser_error_rate/abduction"] == 0.0 and m["propose/parser_error_rate/deduction"] == 0.0
    logged = [r for r in sp.store.rollouts(1) if r.parse_status == "parser_error"]
    assert len(logged) == B and all(r.reward is None and r.advantage is None for r in logged)
    assert {s.temperature for s in result.samples} == {0.7}


def test_step_with_tiny_random_model(tmp_path, executor, tiny):
    model, tokenizer = tiny
    cfg = make_cfg(rollout={"max_new_tokens_propose": 12, "max_new_tokens_solve": 12})
    backend = make_backend("hf", model, tokenizer, cfg.rollout)
    store = seeded_store(tmp_path, executor)
    sp = SelfPlay(cfg, backend, executor, store, tokenizer, seed=0)
    result = sp.step(1)
    assert len(result.samples) == 6 * B
    # A random model does not follow the format: every reply scores the format penalty and advantages vanish.
    assert all(s.reward == cfg.algorithm.format_penalty for s in result.samples if not s.format_ok)
    check_advantages(result.samples)
    assert len(store.rollouts(1)) == 6 * B
    assert result.metrics["count/deduction/propose"] == B
    assert 0 < len(result.samples[0].completion.token_ids) <= 12


def test_seeding_proposes_the_whole_batch_when_given(tmp_path, executor, tiny):
    """Under several processes rank 0 seeds alone with its share of the batch in its config; the loop passes the
    whole batch size (8 proposals a round for the paper config over 8 ranks would be 64)."""
    from azr.selfplay.seeding import seed_buffers

    _, tokenizer = tiny
    counter = [0]
    backend = ScriptedBackend(lambda p: scripted_reply(p, counter), tokenizer=tokenizer)
    asked: list[int] = []
    real = backend.generate
    backend.generate = lambda prompts, sampling, progress=None: (
        asked.append(len(prompts)),
        real(prompts, sampling),
    )[1]
    cfg = make_cfg(selfplay={"batch_size": 2, "n_seed_tasks": 1000, "max_seeding_rounds": 1})
    sp = SelfPlay(cfg, backend, executor, seeded_store(tmp_path, executor), tokenizer, seed=0)
    seed_buffers(sp, batch_size=12)
    assert asked[0] == 12
