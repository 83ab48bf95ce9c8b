#!/usr/bin/env bash
# What a GPU lease still owes the training stack, in one command:
#   1. tests/test_gpu.py: the varlen flash kernel against the masked-SDPA reference (outputs and
#      gradients), and a packed training step run under torch.cuda.set_sync_debug_mode("error")
#      (all three passed on an H200, 2026-11-27);
#   2. the trainer's stage-1 throughput in SMOLLM2_RECIPE's setup (varlen attention, compiled
#      layers, LoRA dropout 0, token-budget batches), a fixed number of steps per token budget,
#      scored on validation beside popularity (`eager lab search`, via gpu_search_run.sh).
#
#   bash eager/lab/gpu/gpu_checks.sh OUT_DIR [DATASET] [STEPS]
#
# Inputs as for gpu_search_run.sh (README: "The first GPU run"); the sync test builds a toy index
# with faiss, which the GPU image lacks (it has pytest and hypothesis): stage its wheel with the others,
#   bash ../shared/device/stage.sh transformers==5.24.0 peft==0.21.2 faiss-cpu
# $EAGER_RUN_SECONDS (default 420) bounds the search; $EAGER_BATCH_TOKENS (default 65536) the token
# budgets tried; EAGER_PROFILE_STEPS=150:154 (say) also brings back where those steps' time went
# (a torch.profiler table per trial, eager.train.profiling; it slows the 5 steps it records). One trial of 300 steps needs ~300 s on an H200: ~60 s of loading and sample
# building, ~80 s compiling in the first step, ~60 s of steps, then the validation beams (a trial
# given 225 s on 2026-11-27 was stopped inside its validation). A CPU dry run (the GPU tests skip;
# compiling the real model takes minutes here):
#   EAGER_RUN_SECONDS=1500 EAGER_BATCH_TOKENS=512 EAGER_EXTRA_SEARCH_ARGS="--eval-users 8" \
#     bash eager/lab/gpu/gpu_checks.sh /tmp/dry scientific 2
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR [DATASET] [STEPS]}
dataset=${2:-beauty}
steps=${3:-300}
mkdir -p "$out"
started=$(date +%s)

python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py > "$out/gpu_tests.log" 2>&1
echo "gpu tests: exit $? after $(($(date +%s) - started)) s"
grep -E "passed|failed|skipped|error" "$out/gpu_tests.log" | tail -3

fast='attention="varlen",compile=True,stage1.lora.dropout=0.0,stage1.batch_size=1024'
trials=""
for budget in ${EAGER_BATCH_TOKENS:-65536}; do
  trials="$trials --trial 'fast-$budget:$fast,stage1.batch_tokens=$budget'"
done
export EAGER_SEARCH_ARGS="$trials --max-steps $steps ${EAGER_EXTRA_SEARCH_ARGS:---eval-users 500}"
EAGER_RUN_SECONDS=${EAGER_RUN_SECONDS:-420} bash eager/lab/gpu/gpu_search_run.sh "$out" "$dataset" full
# Steady tokens/s (from the fourth step, past compiling) and peak memory per trial; for a trial the
# clock stopped, its last progress record (synced, once a minute) still gives the rate so far:
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
try:
    for t in json.load(open(out / "search.json"))["trials"]:
        print(t["trial"], {k: t.get(k) for k in ("steps", "tokens", "tokens_per_s_steady", "valid_ndcg@10", "error")})
except OSError:
    print("no search.json: no trial finished")
for log in sorted(out.glob("*.jsonl")):
    progress = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("in_epoch")]
    if progress:
        print(log.name, "last progress:", {k: progress[-1].get(k) for k in ("step", "seconds", "tokens_per_s", "tokens_per_s_steady")})
PY
echo "checks: $(($(date +%s) - started)) s"
