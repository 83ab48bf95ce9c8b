#!/usr/bin/env bash
# The README's serving numbers: latency in NF4 (every Linear, and MLPs only) and fp32, then batched
# throughput, for one checkpoint.
#   bash scripts/bench_serving.sh CHECKPOINT_DIR [OUT_DIR]
# Run it on an idle machine: both paths (engine, HF generate) are timed in the same process.
set -euo pipefail
checkpoint=${1:?usage: bench_serving.sh CHECKPOINT_DIR [OUT_DIR]}
out=${2:-runs}
mkdir -p "$out"
for dtype in nf4 nf4-mlp fp32; do
  eager bench latency --checkpoint "$checkpoint" --dtype "$dtype" --requests 20 --json > "$out/bench_latency_$dtype.json"
done
eager bench throughput --checkpoint "$checkpoint" --dtype fp32 --users 32 --batch 8 --json > "$out/bench_tput_fp32.json"
