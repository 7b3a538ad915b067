#!/usr/bin/env bash
# Two training processes on one CPU machine, one self-play step of the default recipe (real SmolLM2-135M, loaded
# once per process: several minutes of both cores). Checks one metrics line with dist/world_size = 2 and one
# checkpoint. `accelerate launch --cpu --num_processes 2` would start a single process (accelerate needs an MPI
# hostfile for several CPU processes), so this uses --multi_gpu, which starts them through torchrun; on a machine
# without CUDA they train on the CPU over gloo.
#   bash scripts/ddp_smoke.sh [RUN_DIR]      (default /tmp/ddp-run; it is replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=${1:-/tmp/ddp-run}
rm -rf "$run_dir"
OMP_NUM_THREADS=1 .venv/bin/accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
  --mixed_precision no --dynamo_backend no \
  -m azr train --config configs/cpu-smollm2.toml --steps 1 --run-dir "$run_dir"
.venv/bin/python - "$run_dir" <<'PY'
import sys
from azr.training.checkpoint import list_checkpoints
from azr.metrics import read_metrics

rows = read_metrics(sys.argv[1])
assert [r["step"] for r in rows] == [1], rows
assert rows[0]["dist/world_size"] == 2, rows[0].get("dist/world_size")
assert [s for s, _ in list_checkpoints(sys.argv[1])] == [1]
print(f"ddp smoke: ok (world size 2, {rows[0]['train/sequences']:.0f} sequences, {rows[0]['perf/seconds/step']:.0f} s)")
PY
