#!/usr/bin/env bash
# Paper fidelity (docs/results/paper_fidelity.md): the variant profile at 224 px; Figure 7 of the
# pretrained ViT-Ti/16, of the same model untrained, and of the from-scratch small-data v2 model
# (seed 3 of the seeds study, its last checkpoint); few-shot linear accuracy of the pretrained and
# the untrained ViT-Ti/16. Records go to docs/runs/paper_fidelity/, Figure 7's pictures to
# docs/results/figure7/, and the tables are regenerated. A run already recorded is not run again.
#
#   VITLAB_DATA_DIR=../shared/data scripts/study_paper_fidelity.sh [runs folder, default logs/studies/paper_fidelity] \
#       [seeds study's runs folder, default logs/studies/seeds]
#
# Needs the ImageNet-21k ViT-Ti/16 weights (timm layout) in $VITLAB_WEIGHTS (default
# $VITLAB_DATA_DIR/weights/vit_tiny_patch16_224.pth). Commit before you measure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-logs/studies/paper_fidelity}"
seeds_runs="${2:-logs/studies/seeds}"
data="${VITLAB_DATA_DIR:-data}"
images="$data/pizza_steak_sushi"
weights="${VITLAB_WEIGHTS:-$data/weights/vit_tiny_patch16_224.pth}"
pretrained=(model=vit_ti16 model.pretrained=timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k "model.pretrained_file=$weights")
records="$repo/docs/runs/paper_fidelity"

run() {  # run <record name> <analyze|fewshot> <overrides...>
  local name="$1" command="$2"
  shift 2
  if [ -f "$records/$name.json" ]; then
    echo "$name: recorded earlier ($records/$name.json), skipped"
    return
  fi
  [ -f "$runs/$name/results.json" ] || python -m "vitlab.$command" "$@" "hydra.run.dir=$runs/$name"
  python "$repo/scripts/record_run.py" "$runs/$name" "$records/$name.json" --root "<seeds runs>=$seeds_runs"
  if [ "$command" = analyze ]; then  # the pictures the page shows, named by the record they belong to
    mkdir -p "$repo/docs/results/figure7"
    for picture in "$runs/$name"/*.png; do
      cp "$picture" "$repo/docs/results/figure7/${name}_$(basename "$picture")"
    done
  fi
}

[ -f "$records/variant_profile.json" ] ||
  python "$repo/scripts/profile_variants.py" --image-size 224 --record "$records/variant_profile.json"
run figure7_pretrained analyze "${pretrained[@]}" "images=$images" num_images=128
run figure7_random analyze model=vit_ti16 "images=$images" num_images=128
# its shifted-patch tokenizer sees 15 channels (the image and 4 shifted copies): no RGB filters to draw
run figure7_small_data_v2 analyze "ckpt_path=$seeds_runs/small_data_v2_seed3/checkpoints/last.ckpt" \
  "images=$images" num_images=128 "figures=[position_similarity,attention_distance]"
run fewshot_pretrained fewshot "${pretrained[@]}" "root=$images"
run fewshot_random fewshot model=vit_ti16 "root=$images"
python "$repo/scripts/results_tables.py"
