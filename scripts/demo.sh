#!/usr/bin/env bash
# The main job end to end on real data, on a fresh machine: set up, build the Fashion-MNIST stand-in for
# Lamoda's bryuki (trousers) vs bluzy (shirts, T-shirts), inspect it, train all three archs with the known
# recipe, export each as FP32 and INT8 ONNX (with a fitted temperature), classify the unlabelled test folder to
# CSV and a report page, evaluate against test_labels.csv (report.html, calibration, coverage at 99% accuracy)
# and print two tables (also written as data to WORKDIR/summary.json).
# Usage: bash scripts/demo.sh [WORKDIR]   (default: demo/; replaced on each run)
#        PER_CLASS=500 SIZE=32 EPOCHS=2 bash scripts/demo.sh /tmp/small   (a smaller, faster run)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-demo}"
PER_CLASS="${PER_CLASS:-2000}"   # images per class and split; 2000 -> 3200 train / 800 val / 3000 test
SIZE="${SIZE:-32}"               # model input in px (Fashion-MNIST images are 28x28)
EPOCHS="${EPOCHS:-5}"            # the recipe's 5 epochs
START=$(date +%s)

bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

rm -rf "$WORK"
gcv data fashion-mnist --out "$WORK/data" --max-per-class "$PER_CLASS"
gcv data inspect "$WORK/data/train" --test "$WORK/data/test" --json "$WORK/inspect.json"
gcv train "$WORK/data/train" --out "$WORK/run" --arch all --weights none --image-size "$SIZE" --epochs "$EPOCHS"

for arch in efficientnet_b0 resnet18 resnet34; do
  for precision in fp32 int8; do
    name="$arch-$precision"
    gcv export "$WORK/run/$arch/best.pt" --out "$WORK/models/$name.onnx" --precision "$precision" -q
    gcv classify "$WORK/data/test" --model "$WORK/models/$name.onnx" --out "$WORK/results/$name.csv" \
      --report "$WORK/results/$name.html" -q
    gcv evaluate "$WORK/data/test" --model "$WORK/models/$name.onnx" \
      --labels "$WORK/data/test_labels.csv" --out "$WORK/evaluate/$name" --target-accuracy 0.99 -q
  done
done

WALL=$(( $(date +%s) - START ))
python scripts/demo_table.py "$WORK" --json "$WORK/summary.json" --wall-s "$WALL" | tee "$WORK/summary.md"
echo "wall time: $WALL s (setup included)" | tee -a "$WORK/summary.md"
echo "models: $WORK/models/  results and report pages: $WORK/results/  evaluations: $WORK/evaluate/"
