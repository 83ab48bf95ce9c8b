#!/usr/bin/env bash
# Cut what a GPU training run reads for one dataset (its benchmark files, item indices, MiniLM and
# SASRec embeddings) into parts that each fit one lease run beside the working tree, the way
# ../shared/device/stage.sh cuts the base model. Run it here after stage.sh, from the project root:
#
#   bash eager/lab/gpu/stage_inputs.sh [DATASET]        # default beauty; needs the artifacts built here
#
# It writes .device/inputs.partNN and .device/inputs.sha256 and prints one run per part. On the GPU
# machine, after those runs, `source eager/lab/gpu/device_inputs.sh` assembles, checks and unpacks them
# under /root/stage/inputs and exports EAGER_DATA_ROOT and EAGER_ARTIFACTS. The last run then
# carries only .device/{whl,setup.sh,base.gguf.sha256}: the checkpoints in the tree leave too
# little of the 64 MiB for the inputs to ride along.
set -euo pipefail
dataset=${1:-beauty}
root="$(git rev-parse --show-toplevel)"
cd "$root"
data_root=${EAGER_DATA_ROOT:-../shared/data}
artifacts=${EAGER_ARTIFACTS:-artifacts}
folder=$(python3 -c "from eager.data.registry import get_spec; print(get_spec('$dataset').folder)")

need=("$data_root/$folder" "$artifacts/$dataset/semantic/minilm" "$artifacts/$dataset/sasrec/item_embeddings.npy")
for path in "${need[@]}"; do
  [ -e "$path" ] || { echo "missing $path: build it first (README: Item codes)" >&2; exit 1; }
done
indices=$(cd "$artifacts/$dataset/index" && ls -d */ 2>/dev/null | grep -E -- '-minilm/$' | tr -d / || true)
[ -n "$indices" ] || { echo "no MiniLM index under $artifacts/$dataset/index: run eager index build first" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/inputs/data" "$work/inputs/artifacts/$dataset/index" "$work/inputs/artifacts/$dataset/sasrec" \
  "$work/inputs/artifacts/$dataset/semantic"
cp -r "$data_root/$folder" "$work/inputs/data/"
for name in $indices; do cp -r "$artifacts/$dataset/index/$name" "$work/inputs/artifacts/$dataset/index/"; done
cp -r "$artifacts/$dataset/semantic/minilm" "$work/inputs/artifacts/$dataset/semantic/"
cp "$artifacts/$dataset/sasrec/"{item_embeddings.npy,item_keys.json,config.json} "$work/inputs/artifacts/$dataset/sasrec/"
tar cf "$work/inputs.tar" -C "$work" inputs

# Same sizing rule as stage.sh: what is left of 64 MiB after the working tree, at most 30 MiB.
tree_kb=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r du -ck 2>/dev/null | tail -n 1 | cut -f1) || echo 0)
part_kb=$(( 60 * 1024 - ${tree_kb:-0} - 1024 ))
[ "$part_kb" -gt $((30 * 1024)) ] && part_kb=$((30 * 1024))
[ "$part_kb" -ge $((4 * 1024)) ] || { echo "the working tree is $((tree_kb / 1024)) MiB: no room for input parts" >&2; exit 1; }
mkdir -p .device
rm -f .device/inputs.part*
split -b "${part_kb}K" -d -a 2 "$work/inputs.tar" .device/inputs.part
(cd "$work" && sha256sum inputs.tar) > .device/inputs.sha256

echo "staged $dataset inputs ($(du -sh "$work/inputs.tar" | cut -f1); indices: $(echo $indices)) in $(ls .device/inputs.part* | wc -l) parts:"
for part in .device/inputs.part*; do
  echo "  run: carry [\"$part\"]   command: mkdir -p /root/stage && cp $part /root/stage/"
done
echo "then: carry [\".device/whl\", \".device/setup.sh\", \".device/base.gguf.sha256\", \".device/inputs.sha256\"]"
echo "      command: source .device/setup.sh && source eager/lab/gpu/device_inputs.sh && <command>"
