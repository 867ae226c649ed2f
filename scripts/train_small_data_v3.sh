#!/usr/bin/env bash
# experiment=foodvision_small_data_v3 from scratch in one command: masked patch prediction on the
# training images (experiment=foodvision_mpp_pretrain, no labels), then fine-tuning from that run's
# last.ckpt. The overrides go to both runs (seed=, trainer=, paths.log_dir=, ...).
#
#   scripts/train_small_data_v3.sh seed=1
#   scripts/train_small_data_v3.sh seed=2 trainer=gpu data.num_workers=8
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log_dir=logs # conf/paths/default.yaml, unless overridden on the command line
for arg in "$@"; do
  case "$arg" in paths.log_dir=*) log_dir="${arg#paths.log_dir=}" ;; esac
done
pretrain_dir="$log_dir/train/runs/$(date +%Y-%m-%d_%H-%M-%S)_mpp_pretrain"
start=$SECONDS

python "$repo/train.py" experiment=foodvision_mpp_pretrain "$@" "hydra.run.dir=$pretrain_dir"
checkpoint="$(cd "$pretrain_dir" && pwd)/checkpoints/last.ckpt"
python "$repo/train.py" experiment=foodvision_small_data_v3 "model.pretrained=$checkpoint" "$@"

echo "pre-training: $pretrain_dir; pre-training and fine-tuning took $(((SECONDS - start) / 60)) min"
