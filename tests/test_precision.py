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
