#!/usr/bin/env bash
# The seeds study (docs/results/seeds.md): three recipes, three seeds each, every run tested once on
# its last checkpoint; then each run's record is copied into docs/runs/seeds/ and the tables are
# regenerated. Runs one after another (alone on the CPU for honest wall times); a run already
# recorded (or whose folder holds results.json) is not run again, so the script continues a study.
#
#   VITLAB_DATA_DIR=../shared/data scripts/study_seeds.sh [runs folder, default logs/studies/seeds]
#
# Needs the ImageNet-21k ViT-Ti/16 weights (timm layout) in $VITLAB_WEIGHTS (default
# $VITLAB_DATA_DIR/weights/vit_tiny_patch16_224.pth). Commit before you measure: every record says
# whether its code had uncommitted changes.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-logs/studies/seeds}"
weights="${VITLAB_WEIGHTS:-${VITLAB_DATA_DIR:-data}/weights/vit_tiny_patch16_224.pth}"
transfer=(experiment=foodvision_transfer "model.pretrained_file=$weights")

train() {  # train <record name> <overrides...>
  local name="$1" record="$repo/docs/runs/seeds/$1.json"
  shift
  if [ -f "$record" ]; then
    echo "$name: recorded earlier ($record), skipped"
    return
  fi
  [ -f "$runs/$name/results.json" ] || python "$repo/train.py" "$@" "hydra.run.dir=$runs/$name"
  python "$repo/scripts/record_run.py" "$runs/$name" "$record"
}

for seed in 0 1 2; do
  train "transfer_frozen_seed$seed" "${transfer[@]}" seed=$seed
done
for seed in 1 2 3; do
  train "small_data_v2_seed$seed" experiment=foodvision_small_data_v2 seed=$seed
done
for seed in 0 1 2; do
  train "transfer_finetuned_seed$seed" "${transfer[@]}" model.freeze_backbone=false seed=$seed
done
python "$repo/scripts/results_tables.py"
