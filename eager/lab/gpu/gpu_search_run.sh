#!/usr/bin/env bash
# Recipe levers inside one GPU lease: `eager lab search` (stage-1 trials ranked on validation), bounded
# by the lease's clock. The search writes its table after every trial, so a run stopped by the clock
# still hands back what it measured. Inputs as for gpu_lease_run.sh (README: "The first GPU run").
#
#   EAGER_SEARCH_ARGS="--trial base --trial lr-2e-3 --trial init-mean --max-steps 150" \
#     bash eager/lab/gpu/gpu_search_run.sh OUT_DIR [DATASET] [VARIANT]
#
# $EAGER_RUN_SECONDS (default 540) bounds the whole run. Comes back: search.json, search.md, valid_ranks.json (per-user ranks), search.log and each trial's train log
# (and its profile table when EAGER_PROFILE_STEPS=FIRST:LAST asks for one: eager.train.profiling).
# The trials' checkpoints stay on the machine, in $EAGER_SEARCH_WORK (default: a fresh temporary
# folder), so a later step of the same command can re-score one. A trial with a training history cap
# is selected reading its cap (a model reads what it trained on: TrainRecipe.history_window); to see
# what reading the protocol's 20 instead would give (eager/lab/levers.md, lever 8):
#   EAGER_SEARCH_WORK=/tmp/search EAGER_SEARCH_ARGS="--trial base --trial history-5 --max-steps 274" \
#     bash eager/lab/gpu/gpu_search_run.sh $OUT beauty && \
#   python3 eager/lab/rescore_selection.py /tmp/search/history-5 /tmp/search history-5 --max-history 20 --out $OUT/history-5_read20.json
# `--seeds 42,7` in EAGER_SEARCH_ARGS trains every trial once per seed and pools them (search.md's second table).
# A CPU dry run: EAGER_RECIPE=cpu EAGER_SEARCH_WORK=/tmp/sdry/work EAGER_SEARCH_ARGS="--trial base --trial history-5
#   --max-steps 2 --eval-users 8" bash eager/lab/gpu/gpu_search_run.sh /tmp/sdry/out scientific, then the re-score as above.
set -uo pipefail
out=${1:?usage: gpu_search_run.sh OUT_DIR [DATASET] [VARIANT]}
dataset=${2:-beauty}
variant=${3:-full}
mkdir -p "$out"
work=${EAGER_SEARCH_WORK:-$(mktemp -d)}
mkdir -p "$work"
started=$(date +%s)
eval "search_args=(${EAGER_SEARCH_ARGS:-})"  # so a quoted trial spec stays one argument
timeout $(( ${EAGER_RUN_SECONDS:-540} - 10 )) python3 -m eager.cli search --dataset "$dataset" --variant "$variant" \
  --recipe "${EAGER_RECIPE:-multitask-short}" --out "$work" "${search_args[@]}" --json > "$work/stdout.json" 2> "$work/stderr.log"
echo "search: exit $? after $(($(date +%s) - started)) s"
cp "$work/search.json" "$work/search.md" "$work/valid_ranks.json" "$out/" 2>/dev/null || echo "no trial finished"
grep -v -e "it/s\]$" -e "warnings.warn" -e "FutureWarning" "$work/stderr.log" | tail -80 > "$out/search.log"
for f in "${EAGER_ARTIFACTS:-artifacts}/$dataset/train/"*/train_log.jsonl; do  # per-epoch tokens/s, peak memory
  [ -f "$f" ] && cp "$f" "$out/$(basename "$(dirname "$f")" | tr -c 'A-Za-z0-9_.\n-' '_').jsonl"  # the lease drops odd names
done
for f in "${EAGER_ARTIFACTS:-artifacts}/$dataset/train/"*/profile_*.txt; do  # with EAGER_PROFILE_STEPS=FIRST:LAST
  [ -f "$f" ] && cp "$f" "$out/$(basename "$(dirname "$f")" | tr -c 'A-Za-z0-9_.\n-' '_').$(basename "$f")"
done
cat "$out/search.md" 2>/dev/null
grep -E "Traceback|Error" "$out/search.log" | tail -5
