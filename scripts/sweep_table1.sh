#!/usr/bin/env bash
# The paper's Table 1 variants (ViT-Ti/16 ... ViT-H/14) trained on FoodVision Mini, one job each,
# then the sweep's summary: table, accuracy-vs-params / accuracy-vs-GMACs plots, curves per run.
# Arguments go to train.py, e.g. a quick look:
#   scripts/sweep_table1.sh model=vit_ti16,vit_s16 trainer.max_epochs=1
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
started="$(mktemp)"  # the sweep's folder is the multirun.yaml written after this file
trap 'rm -f "$started"' EXIT

log_dir=logs  # conf/paths/default.yaml, unless overridden on the command line
for arg in "$@"; do
  case "$arg" in paths.log_dir=*) log_dir="${arg#paths.log_dir=}" ;; esac
done

python "$repo/train.py" -m experiment=table1_sweep "$@"

sweep_file="$(find "$log_dir" -name multirun.yaml -newer "$started" -print -quit)"
if [[ -z "$sweep_file" ]]; then
  echo "sweep_table1.sh: no multirun.yaml newer than the sweep's start under $log_dir/; summarise by hand:" \
    "python $repo/scripts/summarize_sweep.py <multirun folder>" >&2
  exit 1
fi
python "$repo/scripts/summarize_sweep.py" "$(dirname "$sweep_file")"
