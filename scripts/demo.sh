#!/usr/bin/env bash
# The main job end to end on real data (Fashion-MNIST trousers vs shirts, a stand-in for Lamoda's
# bryuki vs bluzy): set up, build the dataset, train. Usage: bash scripts/demo.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-demo}"
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

rm -rf "$WORK"
gcv-data fashion-mnist --out "$WORK/data" --max-per-class 2000
gcv-data inspect "$WORK/data/train" --test "$WORK/data/test" --json "$WORK/inspect.json"
gcv-train "$WORK/data/train" --out "$WORK/run" --arch resnet18 --weights none --image-size 32
