"""Shared fixtures. Tests never download anything; the real model appears only in slow-marked tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_ENV = "AZR_TEST_DATA"


def data_dir(config: pytest.Config | None = None) -> Path:
    """The shared data directory (benchmarks/, azr_seeds/): ``--data-dir``, else ``$AZR_TEST_DATA``, else
    ``../shared/data`` beside the checkout. Tests that need it skip where it is missing."""
    option = config.getoption("--data-dir") if config is not None else None
    return Path(option or os.environ.get(DATA_ENV) or DEFAULT_DATA)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-dir", help=f"shared test data (default: ${DATA_ENV}, else {DEFAULT_DATA})")


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """A random in-memory Llama (hidden 64, 2 layers) and its tokenizer."""
    from azr.models import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tiny):
    """The tiny model saved as a model directory (for code that loads a model by name)."""
    model, tokenizer = tiny
    path = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def shared_data(request) -> Path:
    path = data_dir(request.config)
    if not path.is_dir():
        pytest.skip(f"shared benchmark data not found at {path} (--data-dir or ${DATA_ENV})")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests with one torch thread (tiny models are faster so on a shared machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def start_executor():
    """A real sandbox pool with the default executor config. Where the sandbox cannot exist (not Linux: no fork
    server, rlimits or seccomp) the test is skipped; anywhere else a sandbox that fails to start fails the test,
    so a broken sandbox shows as failures, never as skips."""
    import sys

    if sys.platform != "linux":
        pytest.skip(f"the sandbox needs Linux (this is {sys.platform})")
    from azr.config import Config
    from azr.executor import Executor

    return Executor(Config().executor)


@pytest.fixture(scope="module")
def executor():
    """A real sandbox pool (:func:`start_executor`), shared by a module's tests."""
    ex = start_executor()
    yield ex
    ex.close()
