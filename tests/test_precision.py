"""Where bf16 is used: the shared resolution of the trainer's and the rollout's bf16 settings."""

import pytest
import torch

from azr import precision

CPU = torch.device("cpu")


@pytest.fixture
def cpu_flags(monkeypatch):
    def set_flags(*flags):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset(flags))

    return set_flags


@pytest.mark.parametrize(
    ("flags", "native"),
    [(("avx2", "fma"), False), (("avx512f", "avx512_bf16"), True), (("amx_tile", "amx_bf16"), True)],
)
def test_native_bf16_on_cpu_follows_the_flags(cpu_flags, flags, native):
    cpu_flags(*flags)
    assert precision.native_bf16(CPU) is native
    assert precision.use_bf16("auto", CPU) is native


def test_a_bool_forces_the_setting(cpu_flags):
    cpu_flags("avx2")
    assert precision.use_bf16(True, CPU) is True
    cpu_flags("amx_bf16")
    assert precision.use_bf16(False, CPU) is False


def test_cpu_flags_are_read_from_proc():
    flags = precision._cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: the first 'flags' line of /proc/cpuinfo
        assert "fpu" in flags or "sse2" in flags or "fp" in flags


@pytest.mark.parametrize(
    ("capability", "native"), [((7, 0), False), ((7, 5), False), ((8, 0), True), ((9, 0), True)]
)
def test_native_bf16_on_cuda_needs_ampere(monkeypatch, capability, native):
    """A V100 (7.0) or T4 (7.5) emulates bf16 (``is_bf16_supported()`` still says yes) and vLLM refuses it there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert precision.native_bf16(torch.device("cuda")) is native
    assert precision.use_bf16("auto", torch.device("cuda")) is native
