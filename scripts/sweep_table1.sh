#!/usr/bin/env bash
# The paper's Table 1 variants (ViT-Ti/16 ... ViT-H/14) trained on FoodVision Mini, one job each.
# When the sweep ends, its Hydra callback (vitlab.sweep_summary.SweepSummary) writes and prints the summary:
# table, accuracy-vs-params / accuracy-vs-GMACs plots, curves per run, in the multirun folder.
# Arguments go to train.py, e.g. a quick look:
#   scripts/sweep_table1.sh model=vit_ti16,vit_s16 trainer.max_epochs=1
set -euo pipefail
exec python "$(dirname "${BASH_SOURCE[0]}")/../train.py" -m experiment=table1_sweep "$@"
