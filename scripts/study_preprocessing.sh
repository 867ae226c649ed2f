#!/usr/bin/env bash
# Why normalisation belongs to the weights (README, models/preprocessing.py): the frozen transfer
# recipe, seed 0, with the weights' own statistics (mean = std = 0.5) and with ImageNet's. Records go
# to docs/runs/preprocessing/, and the tables are regenerated.
#
#   VITLAB_DATA_DIR=../shared/data scripts/study_preprocessing.sh [runs folder, default logs/studies/preprocessing]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-logs/studies/preprocessing}"
weights="${VITLAB_WEIGHTS:-${VITLAB_DATA_DIR:-data}/weights/vit_tiny_patch16_224.pth}"
frozen=(experiment=foodvision_transfer "model.pretrained_file=$weights" seed=0)

train() {  # train <record name> <overrides...>
  local name="$1"
  shift
  [ -f "$runs/$name/results.json" ] || python "$repo/train.py" "$@" "hydra.run.dir=$runs/$name"
  python "$repo/scripts/record_run.py" "$runs/$name" "$repo/docs/runs/preprocessing/$name.json"
}

train weights_statistics "${frozen[@]}"
train imagenet_statistics "${frozen[@]}" "preprocessing.mean=[0.485,0.456,0.406]" "preprocessing.std=[0.229,0.224,0.225]"
python "$repo/scripts/results_tables.py"
