#!/usr/bin/env bash
# The GPU path checked on one CUDA GPU, offline, in under 8 minutes (H100-class), ending in one table:
#   1. pytest -m gpu (tests/test_gpu.py);
#   2. bench/gpu_check.py: one update of a random-weight Qwen2.5-1.5B-shaped model with configs/gpu-1.5b.toml
#      (peak memory against the estimate), hf decoding tokens/s, vLLM tokens/s, log-prob agreement, duplicate-prompt
#      diversity and weight sync (when vllm is installed), a one-rank FSDP2 update and resume over NCCL;
#   3. azr eval --limit 32 on the GPU (the bundled probe benchmark, a random tiny model saved to disk).
# Without CUDA it runs the CPU tests of the GPU path's fixes instead and says which GPU parts it skipped.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA device: skipping pytest -m gpu, the GPU update/decoding/vLLM/NCCL checks and azr eval on the GPU"
  echo "gpu_check: running the CPU tests of the GPU path instead"
  exec "$PY" -m pytest -q tests/test_vllm_calls.py tests/test_precision.py tests/test_memory.py tests/test_runtime.py \
    tests/test_lm_head.py tests/test_checkpoint.py -k "not slow"
fi
status=0
"$PY" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -15 || status=1
tests=${PIPESTATUS[0]}
"$PY" bench/gpu_check.py || status=1
model_dir=$(mktemp -d)
"$PY" -c "from azr.models import tiny_model; m, t = tiny_model(hidden=256, layers=2); m.save_pretrained('$model_dir'); t.save_pretrained('$model_dir')"
start=$SECONDS
if "$PY" -m azr eval --model "$model_dir" --bench probe --limit 32 --device cuda > "$model_dir/eval.log" 2>&1; then
  eval_row="ok ($((SECONDS - start)) s)"
else
  eval_row="FAIL (see $model_dir/eval.log)"; status=1
fi
echo "| pytest -m gpu | exit $tests |"
echo "| azr eval --limit 32 (probe, cuda) | $eval_row |"
exit $status
