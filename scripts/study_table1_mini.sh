#!/usr/bin/env bash
# The Table 1 sweep, shrunk to what a CPU allows (docs/results/paper_fidelity.md): ViT-Ti/16, S/16
# and B/32 from scratch, 5 epochs, validated on 20 % of train/ held out per class; each job tests the
# checkpoint that validation chose (the test split chooses nothing). Records go to
# docs/runs/table1_mini/<model>.json, and the tables are regenerated.
#
#   VITLAB_DATA_DIR=../shared/data scripts/study_table1_mini.sh [runs folder, default logs/studies/table1_mini]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-logs/studies/table1_mini}"

if ! ls "$runs"/*/results.json >/dev/null 2>&1; then
  python "$repo/train.py" -m experiment=table1_sweep model=vit_ti16,vit_s16,vit_b32 trainer.max_epochs=5 \
    data.val_fraction=0.2 "hydra.sweep.dir=$runs"
fi
for job in "$runs"/*/; do
  [ -f "$job/results.json" ] || continue
  model="$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"])' "$job/results.json")"
  python "$repo/scripts/record_run.py" "$job" "$repo/docs/runs/table1_mini/$model.json"
done
# the sweep summary's picture of these runs, shown beside the table
[ -f "$runs/accuracy_vs_gmacs.png" ] && cp "$runs/accuracy_vs_gmacs.png" "$repo/docs/results/table1_mini_accuracy_vs_gmacs.png"
python "$repo/scripts/results_tables.py"
