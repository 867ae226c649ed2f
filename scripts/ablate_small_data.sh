#!/usr/bin/env bash
# Which small-data technique helps? The proxy comparison of issue 15: foodvision_small_data plus one
# technique at a time (conf/ablation/<name>.yaml), plus all of conf/ablation/combined.yaml, each
# trained on 80 % of the training images and validated on the held-out 20 % (never on test/: test=false),
# under a shorter budget of EPOCHS. One Hydra multirun, jobs one after another; its summary.md (at the
# sweep's root, printed at the end) compares final_val_acc (the last checkpoint's, as the final runs
# are tested) and best_val_acc. The mpp variants first pre-train on the same 80 % (task=mpp).
#
#   scripts/ablate_small_data.sh EPOCHS [train.py overrides ...]
#   scripts/ablate_small_data.sh 200 trainer=gpu data.num_workers=8        # on a GPU machine
#   scripts/ablate_small_data.sh 200 trainer=gpu data.num_workers=8 seed=1,2   # two seeds per variant
#   VARIANTS=baseline,shifted scripts/ablate_small_data.sh 20               # a subset
# Environment: VARIANTS (comma-separated conf/ablation names; default all), VAL_FRACTION (0.2),
# MPP_EPOCHS (pre-training epochs of the mpp variants; default EPOCHS).
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 EPOCHS [train.py overrides ...]   (EPOCHS: the proxy budget, e.g. 200)" >&2
  exit 2
fi
epochs="$1"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variants="${VARIANTS:-baseline,conv,shifted,lsa,sincos2d,seq_pool,ema,repeated_aug,mpp,combined,combined_mpp}"
proxy=("data.val_fraction=${VAL_FRACTION:-0.2}" "test=false")

log_dir=logs # conf/paths/default.yaml, unless overridden on the command line
single=()    # the overrides without sweeps (a,b): for the single pre-training runs
for arg in "$@"; do
  case "$arg" in paths.log_dir=*) log_dir="${arg#paths.log_dir=}" ;; esac
  [[ "$arg" =~ ^[^=]+=[^\[]*, ]] || single+=("$arg")
done
stamp="$(date +%Y-%m-%d_%H-%M-%S)"

pretrain() { # $1: the env var the variant reads, $2...: extra overrides; the same 80 % of train
  local variable="$1" out="$log_dir/train/ablation_pretrain/${stamp}_$1"
  shift
  python "$repo/train.py" experiment=foodvision_mpp_pretrain "${proxy[@]}" \
    "trainer.max_epochs=${MPP_EPOCHS:-$epochs}" "$@" "${single[@]}" "hydra.run.dir=$out"
  export "$variable=$(cd "$out" && pwd)/checkpoints/last.ckpt"
}
if [[ ",$variants," == *,mpp,* ]]; then pretrain VITLAB_MPP_CKPT; fi
if [[ ",$variants," == *,combined_mpp,* ]]; then pretrain VITLAB_MPP_COMBINED_CKPT +ablation=combined; fi

python "$repo/train.py" -m experiment=foodvision_small_data "+ablation=$variants" "${proxy[@]}" \
  "trainer.max_epochs=$epochs" "$@"
