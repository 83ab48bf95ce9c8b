#!/usr/bin/env bash
# One variant end to end inside one short GPU lease: train it with the `multitask-short` recipe, evaluate
# the test and validation splits with the 20-beam engine (the wall time of each is the GPU serving
# throughput), and pack the checkpoint with its log. Every step is bounded so the results are written
# before the lease's command limit, even when a step fails.
#
#   bash eager/lab/gpu/gpu_lease_run.sh OUT_DIR [DATASET] [VARIANT]
#
# Expects what `eager train` reads: $EAGER_DATA_ROOT (the dataset), $EAGER_ARTIFACTS (its index, MiniLM
# and SASRec embeddings) and the backbone ($EAGER_BASE_GGUF); on the GPU machine .device/setup.sh and
# eager/lab/gpu/device_inputs.sh export them (README: "The first GPU run").
# $EAGER_RUN_SECONDS (default 540) is the whole run's budget; $EAGER_EVAL_SPLITS (default "test valid")
# the splits evaluated after training; $EAGER_CHECKPOINT (default checkpoints/DATASET/VARIANT) where
# the checkpoint goes, e.g. a second seed beside the first:
#   EAGER_TRAIN_ARGS="--max-steps 274,188 --train-seed 1" EAGER_CHECKPOINT=checkpoints/beauty/wo_gct-seed1 ...
# $EAGER_PAIR_WITH names a checkpoint already trained (say checkpoints/DATASET/full, carried along) to
# evaluate on the same splits after the run, unrecorded, so both predictions.jsonl come back and
# `eager lab compare logs/eval_pair_test logs/eval_test` pairs the two user by user (~50 s a split on an H200).
# Each evaluation folder also holds ranks.json, which pairs without the data's keys: commit it under
# docs/measurements/ranks/, and pair later runs against it instead of re-evaluating (Beauty `full`'s
# two seeds are there already).
# For a dry run on CPU (into a scratch checkpoint: the default path is the shipped one):
#   EAGER_RECIPE=cpu EAGER_TRAIN_ARGS="--max-steps 2 --eval-users 8 --max-users 200" EAGER_EVAL_LIMIT=16 \
#     EAGER_CHECKPOINT=/tmp/dry/ckpt bash eager/lab/gpu/gpu_lease_run.sh /tmp/dry
# (a limited evaluation is not recorded into the checkpoint). A checkpoint already at the target is
# never overwritten unless EAGER_OVERWRITE=1: on the lease's lean branch there is none, here there is.
set -uo pipefail
out=${1:?usage: gpu_lease_run.sh OUT_DIR [DATASET] [VARIANT]}
dataset=${2:-beauty}
variant=${3:-full}
recipe=${EAGER_RECIPE:-multitask-short}
# The lease hands back only a few files per command, so everything goes into one $out/run.tgz
# (the checkpoint and a logs/ folder), re-packed after every step; key lines also go to stdout.
mkdir -p "$out"
stage_dir=$(mktemp -d)
logs="$stage_dir/logs"
mkdir -p "$logs"
started=$(date +%s)
budget=${EAGER_RUN_SECONDS:-540}
left() { echo $((budget - ($(date +%s) - started))); }
splits=${EAGER_EVAL_SPLITS:-test valid}
train_args=${EAGER_TRAIN_ARGS:-}
# The multitask-short recipe's 256-sample batches reach 98,304 tokens (eager/lab/batch_plan.py), ~110 GiB of
# activations: an H200 holds them, an 80 GB H100 does not (three OOMs on 2026-11-28). Activation
# checkpointing gives the same gradients in a fraction of the memory, so a run on the smaller card
# repeats one on the larger (every layer; EAGER_TRAIN_ARGS="--activation-checkpointing 2" asks for
# every other one instead).
gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1 | tr -dc 0-9)
recompute=0
if [ "$recipe" = multitask-short ] && [ -n "$gpu_mib" ] && [ "$gpu_mib" -lt 120000 ] && [[ "$train_args" != *checkpointing* ]]; then
  train_args="$train_args --activation-checkpointing"
  recompute=1
  echo "GPU memory ${gpu_mib} MiB < 120000: training with --activation-checkpointing"
fi
# The multitask-short recipe trains for ~250 s on an H200 (both stages, their validation, loading), ~370 s
# on an H100 with every layer checkpointed (41k tokens/s against 75k), and each split takes ~60 s:
# a smaller budget stops the run before its checkpoint (a 325 s test-only wo_dki run did on
# 2026-11-27), so say so before spending the lease on it.
evals=$(echo $splits | wc -w)
[ -n "${EAGER_PAIR_WITH:-}" ] && evals=$((2 * evals))  # the pair's evaluations too
need=$((280 + 120 * recompute + 60 * evals))
if [ "$recipe" = multitask-short ] && [ "$budget" -lt "$need" ]; then
  echo "warning: EAGER_RUN_SECONDS=$budget is under the ~$need s a multitask-short run with '$splits' needs; it may stop before the checkpoint" >&2
fi
ckpt=${EAGER_CHECKPOINT:-checkpoints/$dataset/$variant}
if [ -e "$ckpt/config.json" ] && [ -z "${EAGER_OVERWRITE:-}" ]; then
  echo "error: $ckpt already holds a checkpoint; set EAGER_CHECKPOINT to write elsewhere (e.g. $ckpt-seed1), or EAGER_OVERWRITE=1 to replace it" >&2
  exit 2
fi
log="$logs/run.log"

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import sys, torch, transformers, peft, accelerate; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
  nproc
} > "$logs/env.txt" 2>&1
cat "$logs/env.txt"

pack() {
  local parts=()
  [ -d "$ckpt" ] && parts+=("$ckpt")
  tar czf "$out/run.tgz" "${parts[@]}" -C "$stage_dir" logs && echo "packed ${parts[*]:-no checkpoint} + logs"
}

# Training gets what is left but the test evaluation (~50 s on an H200); validation runs if time remains.
# (A run killed here leaves nothing: give the whole run at least ~6 min for the multitask-short recipe.)
t0=$(date +%s)
timeout $(($(left) - 80)) python3 -m eager.cli train --dataset "$dataset" --variant "$variant" --recipe "$recipe" \
  --out "$ckpt" $train_args --json > "$logs/train.json" 2> "$log"
echo "train: exit $? after $(($(date +%s) - t0)) s" | tee -a "$log"
cat "$logs/train.json"
cp "${EAGER_ARTIFACTS:-artifacts}/$dataset/train/$variant-$recipe/"{train_log.jsonl,profile_stage1.txt,profile_stage2.txt} "$logs/" 2>/dev/null  # profiles: EAGER_PROFILE_STEPS
grep -v "it/s\]$" "$log" | grep -iE "error|Traceback|exception" -A3 | tail -20
pack

# evaluate NAME CHECKPOINT SPLIT [--record]: one split into $logs/NAME_SPLIT (predictions.jsonl and ranks.json
# come back too, so runs can be compared user by user with `eager lab compare`); a limited run is never recorded.
evaluate() {
  local name=$1 checkpoint=$2 split=$3 scope=${4:-} t0
  if [ "$(left)" -lt 60 ] || [ ! -f "$checkpoint/manifest.json" ]; then
    echo "$name $split: skipped ($(left) s left; $checkpoint/manifest.json $([ -f "$checkpoint/manifest.json" ] && echo found || echo missing))"
    return
  fi
  t0=$(date +%s)
  [ -n "${EAGER_EVAL_LIMIT:-}" ] && scope="--limit $EAGER_EVAL_LIMIT"
  timeout $(($(left) - 15)) python3 -m eager.cli eval --checkpoint "$checkpoint" --split "$split" --dtype "${EAGER_EVAL_DTYPE:-bf16}" \
    $scope --out "$logs/${name}_$split" --json > "$logs/${name}_$split.json" 2>> "$log"
  echo "$name $split ($checkpoint): exit $? after $(($(date +%s) - t0)) s (model load included)"
  cat "$logs/${name}_$split.json"
  pack
}
for split in $splits; do evaluate eval "$ckpt" "$split" --record; done
if [ -n "${EAGER_PAIR_WITH:-}" ]; then
  for split in $splits; do evaluate eval_pair "$EAGER_PAIR_WITH" "$split"; done
fi
grep -E "serving as|Traceback|Error" "$log" | tail -8
echo "run: $(($(date +%s) - started)) s"
