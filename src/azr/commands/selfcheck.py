"""``azr selfcheck``: what this machine offers azr (versions, sandbox tier, kernel build, cached models)."""

from __future__ import annotations

import argparse

HELP = "Show versions, the sandbox tier, the kernel build and the cached models."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--load", action="store_true", help="Also load the default model and generate a few tokens."
    )


def run(args: argparse.Namespace) -> int:
    import os
    import platform

    import torch
    import transformers

    from azr import __version__
    from azr.models import list_models
    from azr.precision import native_bf16

    rows = [
        ("azr", __version__),
        ("python", platform.python_version()),
        (
            "torch",
            f"{torch.__version__} (threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()})",
        ),
        ("transformers", transformers.__version__),
        ("cpus", str(os.cpu_count())),
        ("native bf16", _bf16_line(native_bf16(torch.device("cpu")))),
        ("sandbox tier", _sandbox_tier()),
        ("malloc", _malloc_line()),
    ]
    rows += _sandbox_protections()
    rows += kernel_rows()
    rows += [(f"model {m['alias']}", f"wheel {m['wheel']}; cached: {m['cached']}") for m in list_models()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.load:
        from azr.commands.models import _generate

        return _generate("smollm2-135m", "Say hello.", 12)
    return 0


def _bf16_line(native: bool) -> str:
    if native:
        return "yes on the CPU (AMX/AVX512-BF16): bf16 autocast and decoding are on by default"
    return "no on the CPU: training and decoding stay fp32 by default (bf16 would be emulated, slower)"


def kernel_rows() -> list[tuple[str, str]]:
    """The native kernels' build (:func:`azr.kernels.build_info`): where, whether built, bf16 parts, stale lock."""
    from azr.kernels import build_info, native_kernels

    info = build_info()
    if info.disabled:
        rows = [("kernels", f"off (AZR_NATIVE_KERNELS=0); cache {info.path}")]
    elif info.built:
        module = None if info.stale_lock else native_kernels()  # selfcheck reports a stale lock, leaves it
        bf16 = "unknown (not loaded)" if module is None else _yes(module.bf16_attention_available())
        rows = [("kernels", f"built, cache {info.path}"), ("  bf16 kernels", bf16)]
    else:
        rows = [("kernels", f"not built yet: the first run compiles them (about 40 s) into {info.path}")]
    if info.stale_lock:
        rows.append(
            (
                "  WARNING",
                f"stale build lock {info.path / 'lock'} (a build was killed); the next build removes it",
            )
        )
    return rows


def _yes(held: bool) -> str:
    return "yes" if held else "no (this CPU or compiler lacks AVX512-BF16: PyTorch's attention is used)"


def _malloc_line() -> str:
    from azr.runtime import jemalloc_active, jemalloc_library

    if jemalloc_active():
        return "jemalloc (preloaded by the azr command; AZR_ALLOCATOR=glibc to opt out)"
    if jemalloc_library():
        return "glibc (AZR_ALLOCATOR=glibc; jemalloc is installed)"
    return "glibc (apt install libjemalloc2: the update's peak memory is about 1 GiB lower with it)"


def _sandbox_protections() -> list[tuple[str, str]]:
    """One row per live probe of the active tier (what a job could not do here), or why none ran."""
    try:
        from azr.executor import check_protections

        checks = check_protections()
    except Exception as e:  # selfcheck reports; it does not fail on a broken sandbox
        return [("sandbox probes", f"could not run: {e}")]
    return [(f"  {name}", ("yes" if held else "NO") + f" ({how})") for name, held, how in checks]


def _sandbox_tier() -> str:
    try:
        from azr.executor import probe_tier
    except ImportError:
        return "unknown (executor not installed)"
    tier = probe_tier()
    return tier + (
        "" if tier == "bwrap" else " (weaker than bwrap: install bubblewrap; see azr.executor's threat model)"
    )
