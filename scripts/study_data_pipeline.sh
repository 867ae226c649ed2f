#!/usr/bin/env bash
# The data pipeline study (docs/results/data_pipeline.md): the FoodVision Mini training images read
# from the image folder (cache off and on) and streamed with litdata from local disk, as loader
# images/s beside a ViT-Ti/16 training step, and as images per CPU-second of one loader worker with
# the workers a GPU training at 3,000 images/s needs. Records go to docs/runs/data_pipeline/, and the
# tables are regenerated.
#
#   VITLAB_DATA_DIR=../shared/data scripts/study_data_pipeline.sh [runs folder, default logs/studies/data_pipeline]
#
# Run it alone on the machine: rates are wall-clock (the records hold the load average).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-logs/studies/data_pipeline}"
images="$(cd "${VITLAB_DATA_DIR:-data}" && pwd)/pizza_steak_sushi"
records="$repo/docs/runs/data_pipeline"
shards=streaming_shards  # in the runs folder, named relative to it: the records name no machine's folders
mkdir -p "$runs"
cd "$runs"

[ -d "$shards" ] || python "$repo/scripts/convert_streaming.py" --images "$images" --out "$shards" --num-workers 2
python "$repo/scripts/bench_data.py" --data-root "$images" --streaming-dir "$shards" --train-transform basic \
  --record "$records/rates.json"
python "$repo/scripts/bench_data.py" --data-root "$images" --streaming-dir "$shards" --train-transform basic \
  --per-worker 3000 --record "$records/per_worker.json"
python "$repo/scripts/results_tables.py"
