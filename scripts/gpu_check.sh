#!/usr/bin/env bash
# GPU readiness in one command, on a machine with CUDA: the GPU tests, our ViT against timm's in bf16
# with and without torch.compile, one short real training run with trainer.devices=1, and (with two
# or more GPUs) DDP over NCCL. Ends with one Markdown table, also written to <out>/gpu_check.md.
#
#   scripts/gpu_check.sh [out_dir]        # default: logs/gpu_check/<time>
#   VITLAB_DATA_DIR=/data scripts/gpu_check.sh   # also train on the real FoodVision Mini images
#
# Every step runs even when an earlier one fails; the exit status is non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-logs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$out"
python=${PYTHON:-python}
rows=()
failed=0

# step NAME LOG COMMAND...: runs the command, keeps its output in $out/LOG, records pass/fail and time.
step() {
    local name=$1 logfile=$out/$2
    shift 2
    echo "== $name: $*"
    local start=$SECONDS
    if "$@" >"$logfile" 2>&1; then status=pass; else status=FAIL; failed=1; fi
    elapsed=$((SECONDS - start))
    tail -n 25 "$logfile"
}

if ! $python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: no CUDA device visible to $python; nothing to check." >&2
    exit 1
fi
gpus=$($python -c "import torch; print(torch.cuda.device_count())")
gpu_name=$($python -c "import torch; print(torch.cuda.get_device_name(0))")
versions=$($python -c "import torch, lightning; print(f'torch {torch.__version__}, lightning {lightning.__version__}')")

step "GPU tests" gpu_tests.log $python -m pytest -q -m gpu -p no:cacheprovider tests
rows+=("| GPU tests (\`pytest -m gpu\`) | $status | $(grep -E '[0-9]+ (passed|failed)' "$out/gpu_tests.log" | tail -n 1) | ${elapsed} s |")

for compile in "" "--compile"; do
    label="ours vs timm, bf16${compile:+, torch.compile}"
    step "$label" "bench${compile:+_compile}.log" $python scripts/bench_model.py --device cuda \
        --variants vit_ti16 vit_b16 --precisions bf16 --batch-size 128 --steps 20 --warmup 5 \
        ${compile:+--compile --no-memory}  # memory is measured eagerly; compiling again per process costs minutes
    table=$(grep -E '^\| vit_' "$out/bench${compile:+_compile}.log" \
        | awk -F'|' '{for (i = 2; i <= 7; i++) gsub(/^ +| +$/, "", $i)
                      printf "%s %s: ours %s / timm %s img/s (%sx); ", $2, $4, $5, $6, $7}')
    rows+=("| $label | $status | ${table:-see log} | ${elapsed} s |")
done

# results.json of the newest run under a log folder, summarised.
summary() {
    $python - "$1" <<'PY'
import json, sys
from pathlib import Path
runs = sorted(Path(sys.argv[1]).glob("**/results.json"), key=lambda p: p.stat().st_mtime)
if not runs:
    print("no results.json")
else:
    r = json.loads(runs[-1].read_text())
    m = r["metrics"]
    print(f"{r['model']} {r['image_size']}px, {r['global_step']} steps, "
          f"{m.get('train/images_per_sec', float('nan')):.0f} train img/s, test/acc {m.get('test/acc', float('nan')):.3f}")
PY
}

train_args=(trainer=gpu trainer.devices=1 logger=csv data.num_workers=8)
step "train, 1 GPU, synthetic" train_synthetic.log $python train.py "${train_args[@]}" data=synthetic \
    model=vit_b16 data.train_size=4096 data.val_size=512 data.test_size=512 data.batch_size=128 \
    trainer.max_epochs=2 paths.log_dir="$out/train_synthetic"
rows+=("| train ViT-B/16, 1 GPU, synthetic 224 px, bf16 | $status | $(summary "$out/train_synthetic") | ${elapsed} s |")

if [ -n "${VITLAB_DATA_DIR:-}" ] && [ -d "$VITLAB_DATA_DIR/pizza_steak_sushi" ]; then
    step "train, 1 GPU, FoodVision Mini" train_foodvision.log $python train.py "${train_args[@]}" \
        experiment=foodvision_small_data data.root="$VITLAB_DATA_DIR/pizza_steak_sushi" \
        paths.log_dir="$out/train_foodvision"
    rows+=("| experiment=foodvision_small_data, 1 GPU | $status | $(summary "$out/train_foodvision") | ${elapsed} s |")
fi

if [ "$gpus" -ge 2 ]; then
    step "DDP over NCCL" train_ddp.log $python train.py "${train_args[@]}" trainer=ddp trainer.accelerator=gpu \
        trainer.devices=2 data=synthetic model=vit_b16 data.train_size=4096 data.batch_size=128 \
        trainer.max_epochs=1 paths.log_dir="$out/train_ddp"
    rows+=("| train ViT-B/16, DDP over NCCL, 2 GPUs | $status | $(summary "$out/train_ddp") | ${elapsed} s |")
else
    rows+=("| DDP over NCCL | skipped | needs 2 GPUs, this machine has $gpus | - |")
fi

{
    echo "GPU check on $gpus x $gpu_name ($versions), $(date -u +%Y-%m-%d)"
    echo
    echo "| check | status | result | time |"
    echo "|---|---|---|---:|"
    printf '%s\n' "${rows[@]}"
} | tee "$out/gpu_check.md"
exit $failed
