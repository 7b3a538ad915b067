"""``evaluate`` end to end: every benchmark's scoring path with a scripted backend and the real sandbox, the
gold/wrong oracles, pass@k with samples, the results file, and the ``azr eval`` command; the demonstrations
(shots), CRUXEval-I by execution and the probe. Benchmark files come from ../shared/data/benchmarks (never copied into the
repository); the probe runs on tests/fixtures/probe-fixture.jsonl."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from azr.evaluation import BENCHMARKS, EvalResults, OracleBackend, evaluate, probe
from azr.evaluation import templates as tpl
from azr.evaluation.benchmarks import Item, ScoreContext, crux_input_answer, resolve
from azr.evaluation.demos import (
    DEMO_FILE,
    Demo,
    Shots,
    first_demos,
    load_demos,
    trace_thinks,
    wrong_demos,
)
from azr.evaluation.scoring_code import score_input_predictions
from azr.rollout import ScriptedBackend
from azr.tasks.prompts import build_prompt
from azr.types import Role, Task, TaskType

LOCAL = ["cruxeval-o", "cruxeval-i", "humaneval+", "mbpp+", "gsm8k", "math500", "aime24", "aime25", "amc23",
         "minerva", "olympiadbench"]  # fmt: skip


@pytest.fixture(scope="module")
def executor():
    from azr.executor import Executor

    with Executor() as ex:
        yield ex


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("expected")


@pytest.fixture
def data_dir(shared_data: Path) -> Path:
    return shared_data / "benchmarks"


def _model_like_reply(bench: str, item: Item) -> str:
    """A right answer written the way a model writes it (not the oracle's exact format)."""
    d = item.data
    if bench == "cruxeval-o":
        return f"<think> trace the loop </think>\n<answer>\n```output\n{d['output']}\n```\n</answer>"
    if bench == "cruxeval-i":
        return f"<think> invert it </think>\n<answer>\n```input\n{d['input']}\n```\n</answer>"
    if bench == "humaneval+":  # only the body: the scorer prepends the prompt
        return "Here it is:\n```python\n" + item.gold[len(d["prompt"]) :] + "\n```"
    if bench == "mbpp+":
        return f"```python\n{item.gold}\n```\nThis works."
    return f"Step by step ... so the answer is $\\boxed{{{item.gold}}}$."


def _scripted(bench: str, items: list[Item]) -> ScriptedBackend:
    """Right on the first item, a plausible wrong answer on the others."""
    spec = BENCHMARKS[bench]
    right = {spec.prompt(items[0], None): _model_like_reply(bench, items[0])}
    wrong = {"cruxeval-o": "<answer>\n```output\n[]\n```\n</answer>", "cruxeval-i": "<answer>\n```input\n0\n```",
             "humaneval+": "```python\n    return None\n```", "mbpp+": "I cannot do that."}  # fmt: skip
    return ScriptedBackend(lambda p: right.get(p, wrong.get(bench, "\\boxed{-1}")))


@pytest.mark.parametrize("bench", LOCAL)
def test_scripted_backend_scores_every_benchmark(bench, executor, cache, data_dir):
    items = BENCHMARKS[bench].load(data_dir, 3)
    backend = _scripted(bench, items)
    # without a tokenizer the scripted backend counts UTF-8 bytes as tokens: give room for the longest reply
    kw = {"data_dir": data_dir, "expected_cache": cache, "max_new_tokens": 4096}
    evaluation = evaluate(backend, None, executor, [bench], limit=3, **kw)
    records = [r for r in evaluation.records if r.bench == bench]
    assert [r.correct for r in records] == [[True], [False], [False]], [r.details for r in records]
    assert evaluation.summary() == {bench: {"score": pytest.approx(1 / 3), "n": 3}}
    assert len(backend.calls) == 3


@pytest.mark.parametrize("wrong", [False, True])
def test_oracle_gold_scores_100_and_wrong_scores_0(wrong, executor, cache, data_dir):
    evaluation = evaluate(
        OracleBackend(wrong), None, executor, LOCAL, limit=4, data_dir=data_dir, expected_cache=cache
    )
    assert set(evaluation.results) == set(LOCAL)
    assert all(r.score == (0.0 if wrong else 1.0) for r in evaluation.results.values()), evaluation.table()


def test_samples_give_unbiased_pass_at_k(executor, cache, data_dir):
    """Alternating right/wrong replies: each item has c=1 of n=2, so pass@1 = 0.5 and pass@2 = 1."""
    items = BENCHMARKS["cruxeval-o"].load(data_dir, 2)
    gold = {BENCHMARKS["cruxeval-o"].prompt(it, None): it.data["output"] for it in items}
    turn = iter(range(1000))
    backend = ScriptedBackend(lambda p: f"<answer>{gold[p] if next(turn) % 2 == 0 else 'None'}</answer>")
    evaluation = evaluate(backend, None, executor, ["cruxeval-o"], limit=2, data_dir=data_dir, samples=2)
    result = evaluation.results["cruxeval-o"]
    assert result.pass_at == {1: pytest.approx(0.5), 2: pytest.approx(1.0)}
    assert evaluation.metrics() == {"eval/cruxeval-o": 0.5, "eval/cruxeval-o/pass@2": 1.0}


def test_unavailable_benchmarks_are_skipped_with_a_reason(executor, tmp_path):
    evaluation = evaluate(OracleBackend(), None, executor, ["gsm8k", "livecodebench"], data_dir=tmp_path)
    assert not evaluation.results
    assert "no file matching" in evaluation.skipped["gsm8k"]
    assert evaluation.skipped["livecodebench"]
    with pytest.raises(ValueError, match="unknown benchmark"):
        resolve(["nope"])


def test_eval_command_with_the_oracle_writes_json(tmp_path, data_dir, capsys, monkeypatch):
    from azr.cli import main

    monkeypatch.setenv("AZR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run.json"
    argv = ["eval", "--model", "oracle", "--bench", "cruxeval-o,mbpp+,amc23", "--limit", "2"]
    assert main([*argv, "--data-dir", str(data_dir), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["summary"] == {b: {"score": 1.0, "n": 2} for b in ("cruxeval-o", "mbpp+", "amc23")}
    assert len(data["records"]) == 6 and "cruxeval-o" in capsys.readouterr().out
    assert main(["eval", "--model", "oracle", "--bench", "bogus"]) == 2


# ---- demonstrations (shots) -----------------------------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"
FIXTURES = Path(__file__).parent / "fixtures"
CRUX_ROW = {  # written for this test in the CRUXEval row format (no benchmark item is copied here)
    "id": "sample_x",
    "code": "def f(names):\n    seen = []\n    for n in names:\n        if n.lower() not in seen:\n"
    "            seen.append(n.lower())\n    return seen",
    "input": "['Ann', 'bob', 'ANN', 'Cy']",
    "output": "['ann', 'bob', 'cy']",
}


def _golden(name: str, text: str) -> None:
    """Compare with tests/golden/<name>; ``AZR_UPDATE_GOLDEN=1`` rewrites it (review the diff)."""
    path = GOLDEN / name
    if os.environ.get("AZR_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.is_file(), f"missing golden file {path}; run with AZR_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"prompt differs from {path}"


def test_every_demo_output_is_what_the_sandbox_computes(executor):
    """Each demonstration runs (static check, determinism runs) and returns exactly its recorded output."""
    demos = load_demos()
    assert wrong_demos(executor, list(demos)) == []
    broken = Demo("demo-broken", "deduction", "def f(x):\n    return x + 1", ("1",), ("3",))
    assert wrong_demos(executor, [demos[0], broken]) == ["demo-broken"]
    by_type = {t: [d for d in demos if d.type == t] for t in ("deduction", "abduction", "induction", "code")}
    assert len(by_type["deduction"]) >= 4 and len(by_type["abduction"]) >= 4 and len(by_type["code"]) >= 3
    assert len(by_type["induction"]) >= 3
    assert all(len(d.inputs) == 8 and d.message for d in by_type["induction"])
    assert all(d.message and d.program.startswith(f"def {d.entry}(") for d in by_type["code"])
    assert len({d.id for d in demos}) == len(demos)


def test_cruxeval_o_prompt_with_two_shots_golden():
    """shots=2 is the training solve prompt with the first two deduction demos; shots=0 is the prompt as it was
    before demonstrations existed (the shots0 golden was rendered by the code without them)."""
    bench = BENCHMARKS["cruxeval-o"]
    item = bench.make_item(CRUX_ROW, 0)
    two = bench.prompt(item, None, Shots(2))
    _golden("eval_cruxeval-o_shots2.plain.txt", two)
    _golden("eval_cruxeval-o_shots0.plain.txt", bench.prompt(item, None))
    task = Task(TaskType.DEDUCTION, CRUX_ROW["code"], (CRUX_ROW["input"],), (CRUX_ROW["output"],))
    demos = [d.task() for d in first_demos("deduction", 2)]
    assert two == build_prompt(TaskType.DEDUCTION, Role.SOLVE, task=task, shots=demos)
    assert two.count("### Task") == 3 and "'PaNcAkE'" in two and CRUX_ROW["output"] not in two


def test_code_prompts_take_demos_as_earlier_turns(data_dir, tiny):
    _, tok = tiny
    for name in ("humaneval+", "mbpp+"):
        bench = BENCHMARKS[name]
        item = bench.load(data_dir, 1)[0]
        d = item.data
        message = (
            tpl.mbpp_message(d["prompt"], d["problem"].entry)
            if d["mbpp"]
            else tpl.humaneval_message(d["prompt"])
        )
        assert bench.prompt(item, None) == f"{tpl.CODE_SYSTEM}\n\n{message}\n\n"  # as before shots existed
        plain = bench.prompt(item, None, Shots(2))
        assert plain.startswith(f"{tpl.CODE_SYSTEM}\n\n") and plain.endswith(f"\n\n{message}\n\n")
        assert "def count_capitalised(text):" in plain and "def running_max(nums):" in plain
        assert "merge_counts" not in plain
        chat = bench.prompt(item, tok, Shots(2))
        assert chat.count("<|im_start|>user") == 3 and chat.count("<|im_start|>assistant") == 3


def test_shots_reach_the_backend_and_the_meta(executor, cache, data_dir):
    items = BENCHMARKS["cruxeval-o"].load(data_dir, 2)
    backend = ScriptedBackend(lambda p: "<answer>\n```output\n0\n```\n</answer>")
    benches = ["cruxeval-o", "mbpp+", "probe", "gsm8k"]
    evaluation = evaluate(
        backend, None, executor, benches, limit=2, data_dir=data_dir, expected_cache=cache, shots=2
    )
    assert backend.calls[:2] == [BENCHMARKS["cruxeval-o"].prompt(it, None, Shots(2)) for it in items]
    meta = evaluation.meta
    assert meta["shots"] == 2 and meta["demo_file"] == "demos.jsonl"
    assert meta["demo_sha256"] == hashlib.sha256(DEMO_FILE.read_bytes()).hexdigest()
    assert meta["demo_ids"]["cruxeval-o"] == ["demo-deduction-1", "demo-deduction-2"]
    assert meta["demo_ids"]["mbpp+"] == ["demo-code-1", "demo-code-2"]
    assert len(meta["demo_ids"]["probe"]) == 6 and meta["demo_ids"]["gsm8k"] == []
    assert meta["max_new_tokens"]["cruxeval-o"] == 96
    with pytest.raises(ValueError, match="has only 4 deduction"):
        evaluate(backend, None, executor, ["cruxeval-o"], data_dir=data_dir, shots=5)


def test_every_deduction_and_abduction_demo_has_a_trace(executor):
    """The trace form is the training demonstrations' own (``trace_think`` over the sandbox's trace): each
    deduction/abduction demonstration traces within the recipe's 12 lines, and the trace ends in its output."""
    from azr.tasks.prompts import trace_think

    demos = load_demos()
    thinks = trace_thinks(executor, list(demos), 12)
    traced = [d for d in demos if d.type in ("deduction", "abduction")]
    assert sorted(thinks) == sorted(d.id for d in traced)
    for d in traced:
        [trace] = executor.trace_many([(d.program, d.inputs[0])], 12)
        assert thinks[d.id] == trace_think(TaskType(d.type), d.task(), trace)
        assert f"f({d.inputs[0]}) line by line:" in thinks[d.id] and d.outputs[0] in thinks[d.id]
    assert "counts = {}\n...\nreturn {" in trace_thinks(executor, [traced[2]], 1)[traced[2].id]  # cut short
    broken = Demo("demo-broken", "deduction", "def f(x):\n    return x // 0", ("1",), ("1",))
    with pytest.raises(ValueError, match=r"\['demo-broken'\] have no trace"):
        trace_thinks(executor, [traced[0], broken])


def test_evaluation_traces_as_many_lines_as_the_recipe_trains_on():
    """``azr eval`` does not read a training config: its trace length is a constant that must follow the CPU
    recipe's ``selfplay.demo_trace``, or the trace form would show another format than the one trained on."""
    from azr.config import DEFAULT_RECIPE, load
    from azr.evaluation.runner import TRACE_LINES

    assert load(DEFAULT_RECIPE).selfplay.demo_trace == TRACE_LINES


def test_the_in_training_evaluation_offers_the_forms_azr_eval_has():
    """``logging.eval_demo_think``'s choices are spelled in the config (which imports no evaluation code)."""
    from azr.config import _CHOICES
    from azr.evaluation.demos import DEMO_THINKS

    assert _CHOICES["logging.eval_demo_think"] == DEMO_THINKS


def test_trace_demonstrations_reach_the_prompts_the_meta_and_the_budget(executor, cache, data_dir):
    """``demo_think="trace"``: CRUXEval-O's two demonstrations carry their traces, in the exact form the training
    prompt takes (``build_prompt(..., thinks=...)``), CRUXEval's budget rises to the recipe's solve budget, the
    probe's induction demonstrations keep their sentence, and the meta says which form was used."""
    backend = ScriptedBackend(lambda p: "<answer>\n```output\n0\n```\n</answer>")
    evaluation = evaluate(
        backend, None, executor, ["cruxeval-o", "probe"], limit=1, data_dir=data_dir, shots=2,
        demo_think="trace",
    )  # fmt: skip
    item = BENCHMARKS["cruxeval-o"].load(data_dir, 1)[0]
    demos = first_demos("deduction", 2)
    thinks = trace_thinks(executor, demos)
    task = Task(TaskType.DEDUCTION, item.data["code"], (item.data["input"],), (item.data["output"],))
    expected = build_prompt(
        TaskType.DEDUCTION, Role.SOLVE, task=task, shots=[d.task() for d in demos],
        thinks=[thinks[d.id] for d in demos],
    )  # fmt: skip
    assert backend.calls[0] == expected and "line by line" in expected
    assert backend.calls[0] != BENCHMARKS["cruxeval-o"].prompt(item, None, Shots(2))
    induction = [c for c in backend.calls if "### Task" in c and "hint" in c.lower()]
    assert induction and all("line by line" not in c for c in induction)
    assert evaluation.meta["demo_think"] == "trace"
    assert evaluation.meta["max_new_tokens"] == {"cruxeval-o": 192, "probe": 256}
    plain = evaluate(backend, None, executor, ["cruxeval-o"], limit=1, data_dir=data_dir, shots=2)
    assert plain.meta["demo_think"] == "sentence" and plain.meta["max_new_tokens"]["cruxeval-o"] == 96
    with pytest.raises(ValueError, match="demo_think one of sentence, trace"):
        evaluate(backend, None, executor, ["cruxeval-o"], data_dir=data_dir, demo_think="cot")


def test_eval_command_takes_another_demonstration_file(tmp_path, shared_data, capsys):
    """``--demo-file``: its demonstrations reach the prompts and its name and sha256 the results; a file whose
    output the sandbox disagrees with, a malformed one and a missing one each stop with one line, before anything
    is generated."""
    from azr.cli import main

    mine = Demo("my-deduction", "deduction", "def f(n):\n    return n * 7", ("6",), ("42",))
    row = {"id": mine.id, "type": mine.type, "program": mine.program, "inputs": ["6"], "outputs": ["42"]}
    good = tmp_path / "mine.jsonl"
    good.write_text(json.dumps({**row, "message": ""}) + "\n")
    out = tmp_path / "r.json"
    argv = ["eval", "--model", "oracle", "--bench", "cruxeval-o", "--limit", "2", "--shots", "1"]
    argv += ["--data-dir", str(shared_data / "benchmarks")]
    assert main([*argv, "--demo-file", str(good), "--json", str(out)]) == 0
    meta = json.loads(out.read_text())["meta"]
    assert meta["demo_file"] == "mine.jsonl" and meta["demo_ids"] == {"cruxeval-o": ["my-deduction"]}
    assert meta["demo_sha256"] == hashlib.sha256(good.read_bytes()).hexdigest()
    assert "return n * 7" in BENCHMARKS["cruxeval-o"].prompt(
        BENCHMARKS["cruxeval-o"].load(shared_data / "benchmarks", 1)[0], None, Shots(1, good)
    )
    capsys.readouterr()
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({**row, "outputs": ["41"]}) + "\n")
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text(json.dumps(row) + "\n{not json\n")
    for path, message in (
        (wrong, "the sandbox computes other outputs for demonstrations ['my-deduction']"),
        (malformed, "malformed.jsonl:2: not a demonstration record"),
        (tmp_path / "absent.jsonl", "absent.jsonl not found"),
    ):
        assert main([*argv, "--demo-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_eval_command_rejects_more_shots_than_demos(capsys):
    from azr.cli import main

    assert main(["eval", "--model", "oracle", "--bench", "cruxeval-i", "--shots", "7"]) == 2
    assert "use 4 or fewer" in capsys.readouterr().err


# ---- CRUXEval-I by execution ----------------------------------------------------------------------------------

EXPRESSIONS = [  # (program, expression answer, gold output)
    ("def f(s):\n    return s[::-1]", "'ab' * 2", "'baba'"),
    ("def f(xs):\n    return sum(xs)", "[1] * 3", "3"),
    ("def f(a, b):\n    return a - b", "*[5, 2]", "3"),
    ("def f(d):\n    return sorted(d)", "dict(b=1, a=2)", "['a', 'b']"),
]


def test_expression_inputs_count_for_the_benchmark_only(executor):
    """The benchmark harness runs ``f(<answer>)``, so expressions are answers there; self-play keeps literals."""
    bench = executor.check_abduction_many(EXPRESSIONS, literals_only=False)
    assert [r.status.value for r in bench] == ["ok"] * 4
    guarded = executor.check_abduction_many(EXPRESSIONS)
    assert [r.status.value for r in guarded] == ["rejected"] * 4
    wrong = executor.check_abduction_many(
        [("def f(s):\n    return s", "'ab' * 3", "'abab'")], literals_only=False
    )
    assert wrong[0].status.value == "wrong"
    programs, answers, golds = zip(*EXPRESSIONS, strict=True)
    verdicts = score_input_predictions(executor, list(programs), list(answers), list(golds))
    assert [v.correct for v in verdicts] == [True] * 4
    replies = [f"<answer>\n```input\nf({a})\n```\n</answer>" for a in answers]
    assert [crux_input_answer(r) for r in replies] == list(answers)


def test_crux_input_answer_reading():
    assert crux_input_answer("<think>x</think><answer>\n```input\n\n```\n</answer>") == ""  # the call f()
    assert crux_input_answer("<answer> 'a', 2 </answer>") == "'a', 2"
    assert crux_input_answer("<answer>\n```output\n1\n```\n</answer>") is None
    assert crux_input_answer("no tags at all") is None
    assert crux_input_answer("<answer>\n```input\nf(g(1))\n```") == "g(1)"
    assert crux_input_answer("<answer>\n```input\nf(1) + f(2)\n```") == "f(1) + f(2)"


@pytest.mark.parametrize("wrong", [False, True])
def test_cruxeval_i_oracle_on_all_800(wrong, executor, data_dir):
    """Every gold input scores, the 13 expression inputs included (``''.join(['A'] * 20)``, ``dict(e=1)``,
    the program's own globals, the empty call); the wrong oracle's ``None`` almost never does."""
    evaluation = evaluate(OracleBackend(wrong), None, executor, ["cruxeval-i"], data_dir=data_dir)
    result = evaluation.results["cruxeval-i"]
    assert result.n_items == 800
    if wrong:
        assert result.score < 0.01
    else:
        assert result.score == 1.0, [r.details for r in evaluation.records if not r.correct[0]][:5]


# ---- the probe ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", [False, True])
def test_probe_oracle_scores_all_or_nothing_per_type(wrong, executor):
    evaluation = evaluate(OracleBackend(wrong), None, executor, ["probe"], data_dir=FIXTURES, shots=2)
    expected = 0.0 if wrong else 1.0
    assert list(evaluation.results) == ["probe", "probe/deduction", "probe/abduction", "probe/induction"]
    assert {b: r.score for b, r in evaluation.results.items()} == dict.fromkeys(evaluation.results, expected)
    assert evaluation.results["probe"].n_items == 6
    assert [(r.bench, r.id) for r in evaluation.records[:2]] == [
        ("probe/deduction", "probe-deduction-0001"),
        ("probe/deduction", "probe-deduction-0002"),
    ]


def test_probe_prompts_and_scorer_are_the_training_ones(executor):
    """Same prompt as a training solve (visible pairs from the record), and the training scorer: an abduction
    answer that is an expression scores False here although ``f`` of it gives the output."""
    bench = BENCHMARKS["probe"]
    items = bench.load(FIXTURES, 1)
    assert [it.id for it in items] == ["probe-deduction-0001", "probe-abduction-0001", "probe-induction-0001"]
    induction = items[2]
    task = induction.data["task"]
    demos = [d.task() for d in first_demos("induction", 1)]
    expected = build_prompt(TaskType.INDUCTION, Role.SOLVE, task=task, n_visible=4, n_inputs=6, shots=demos)
    prompt = bench.prompt(induction, None, Shots(1))
    assert prompt == expected and prompt.count("Case 4:") == 2 and "Case 5:" not in prompt
    abduction = items[1]  # f(a, b) = a * 2 + b, output 10
    replies = ["<answer>\n```input\n3, 4\n```\n</answer>", "<answer>\n```input\n3, 2 * 2\n```\n</answer>"]
    scored = bench.score(ScoreContext(executor), [abduction, abduction], replies)
    assert [s.correct for s in scored] == [True, False]
    assert scored[1].detail.startswith("parse:")


def test_probe_without_its_file_is_skipped_with_a_reason(executor, tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "PROBE_FILE", tmp_path / "absent.jsonl")
    evaluation = evaluate(OracleBackend(), None, executor, ["probe"], data_dir=tmp_path)
    assert not evaluation.results and "scripts/make_probe.py" in evaluation.skipped["probe"]


def test_write_json_replaces_the_file_whole(tmp_path):
    evaluation = EvalResults(meta={"shots": 2})
    path = tmp_path / "out" / "run.json"
    path.parent.mkdir()
    path.write_text("old")
    assert evaluation.write_json(path) == path
    assert json.loads(path.read_text())["meta"] == {"shots": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]  # no temporary file left behind


def test_make_probe_drops_seed_task_programs_and_examples():
    """The probe builder drops a task whose program is a seed task's (renamed), and a task with another
    program that shares an input/output example with a seed task."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_probe", Path(__file__).parents[1] / "scripts/make_probe.py"
    )
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    banned = mp.seed_task_programs("cpu-warmstart.jsonl")
    plus_one = "def f(y):\n    return y + 1"  # a warm-start program, renamed
    other = "def f(n):\n    return 1 + n"
    tasks = [
        Task(type="deduction", program=plus_one, inputs=("7",), outputs=("8",)),
        Task(type="induction", program=other, inputs=("3", "5"), outputs=("4", "6"), message="m"),  # 3 -> 4
        Task(type="induction", program=other, inputs=("5", "9"), outputs=("6", "10"), message="m"),
        Task(type="deduction", program="def f(x):\n    return x * 7", inputs=("2",), outputs=("14",)),
    ]
    kept = mp.deduplicate(tasks, banned)
    assert [(t.type, t.inputs) for t in kept] == [("induction", ("5", "9")), ("deduction", ("2",))]


def test_probe_deduction_and_abduction_get_the_shortcut_accounting(executor, cache, data_dir):
    """Each probe deduction/abduction record says what its prompt shows and whether copying it scores (the
    same rules as CRUXEval's: an echoed input or argument for deduction, the sandbox's verdict on the output passed
    back for abduction); induction records say nothing; the rows read back from the probe file agree; and
    ``azr compare`` reports the copy-proof rows of both parts."""
    from azr.evaluation.compare import compare_results
    from azr.evaluation.shortcut import shown_from_data
    from azr.tasks.parsing import ParsedSolution
    from azr.tasks.validate import echoes_input, score_solutions

    gold = evaluate(OracleBackend(), None, executor, ["probe"], data_dir=data_dir, expected_cache=cache)
    wrong = evaluate(OracleBackend(True), None, executor, ["probe"], data_dir=data_dir, expected_cache=cache)
    tasks = {it.id: it.data["task"] for it in BENCHMARKS["probe"].load(data_dir, None)}
    for part in ("deduction", "abduction", "induction"):
        records = [r for r in gold.records if r.bench == f"probe/{part}"]
        assert records
        if part == "induction":
            assert all(r.shown is None and r.copy_can_score is None for r in records)
            continue
        mine = [tasks[r.id] for r in records]
        if part == "deduction":
            assert [r.shown for r in records] == [t.input for t in mine]
            expected = [echoes_input(t.input, t.output) for t in mine]
        else:
            assert [r.shown for r in records] == [t.output for t in mine]
            copies = [ParsedSolution(TaskType.ABDUCTION, t.output) for t in mine]
            ran = score_solutions(executor, TaskType.ABDUCTION, mine, copies)
            expected = [r or echoes_input(t.input, t.output) for r, t in zip(ran, mine, strict=True)]
        assert [r.copy_can_score for r in records] == expected
        from_data = shown_from_data(f"probe/{part}", data_dir)
        assert {r.id: (r.shown, r.copy_can_score) for r in records} == {
            k: (v.text, v.copy_can_score) for k, v in from_data.items()
        }
    rows = {c.bench: c for c in compare_results(wrong.to_dict(), gold.to_dict()).benches}
    for part in ("deduction", "abduction"):
        copy = rows[f"probe/{part}"].copy
        n = sum(r.bench == f"probe/{part}" for r in gold.records)
        assert copy is not None and copy.no_copy.n == n - copy.copy_baseline
        assert copy.no_copy.gained == copy.no_copy.n and copy.no_copy.lost == 0
    assert rows["probe/induction"].copy is None


def test_the_large_probe_is_its_own_benchmark(executor, tmp_path, monkeypatch):
    """``probe-600`` reads ``probe-600*.jsonl`` (never the 150-task probe's file, which never reads it either),
    reports its own parts with their shortcut accounting, and says how to build it when it is missing."""
    rows = (FIXTURES / "probe-fixture.jsonl").read_text().splitlines()
    large = [
        json.dumps({**json.loads(r), "id": json.loads(r)["id"].replace("probe", "probe-600")}) for r in rows
    ]
    (tmp_path / "probe-600.jsonl").write_text("\n".join(large) + "\n")
    monkeypatch.setattr(probe, "PROBE_FILE", tmp_path / "absent.jsonl")
    evaluation = evaluate(OracleBackend(), None, executor, ["probe", "probe-600"], data_dir=tmp_path)
    assert "probe" in evaluation.skipped and evaluation.results["probe-600"].score == 1.0
    assert {r.bench for r in evaluation.records} == {
        f"probe-600/{t}" for t in ("deduction", "abduction", "induction")
    }
    assert all(r.id.startswith("probe-600-") for r in evaluation.records)
    assert any(r.copy_can_score is not None for r in evaluation.records if r.bench == "probe-600/abduction")
    (tmp_path / "probe.jsonl").write_text("\n".join(rows) + "\n")
    both = evaluate(OracleBackend(), None, executor, ["probe"], data_dir=tmp_path)
    assert {r.id for r in both.records} == {json.loads(r)["id"] for r in rows}
    monkeypatch.setattr(probe, "LARGE_PROBE_FILE", tmp_path / "absent.jsonl")
    missing = evaluate(OracleBackend(), None, executor, ["probe-600"], data_dir=tmp_path / "nothing")
    assert "probe-600*.jsonl" in missing.skipped["probe-600"]


def test_make_probe_keeps_a_new_probe_apart_from_an_old_one():
    """``--exclude``: the old probe's programs and examples are banned like the seed tasks'; ids carry the name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_probe", Path(__file__).parents[1] / "scripts/make_probe.py"
    )
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    old = [Task(type="deduction", program="def f(x):\n    return x * 7", inputs=("2",), outputs=("14",))]
    banned = mp.task_keys(old)
    tasks = [
        Task(
            type="abduction", program="def f(n):\n    return n * 7", inputs=("3",), outputs=("21",)
        ),  # renamed
        Task(
            type="deduction", program="def f(x):\n    return x + 12", inputs=("2",), outputs=("14",)
        ),  # example
        Task(type="deduction", program="def f(x):\n    return x - 1", inputs=("2",), outputs=("1",)),
    ]
    assert [t.program for t in mp.deduplicate(tasks, banned)] == ["def f(x):\n    return x - 1"]
    assert mp.record(tasks[2], 3, 0, "probe-600")["id"] == "probe-600-deduction-0003"
