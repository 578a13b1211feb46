#!/usr/bin/env bash
# The main job: set up .venv (scripts/setup.sh), then train with AutoWU on real Fashion-MNIST on this machine
# (CPU or GPU) with the same train.py and configs as everything else, then summarise the run.
#
#   bash scripts/main.sh                         # configs/fashion_mnist_demo.yaml -> runs/demo (a few minutes on CPU)
#   bash scripts/main.sh --epochs 20             # extra arguments go to train.py (they override the config)
#   OUTPUT=runs/demo2 bash scripts/main.sh
#
# Prints progress while it trains, then where AutoWU switched and at what LR, and the final accuracy. The run
# directory holds TensorBoard logs (tb/), steps.csv, epochs.jsonl, results.json and lr_loss.png (LR + loss curves).
# An interrupted demo continues where it stopped when run again; a finished one is moved to OUTPUT.prev first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTPUT="${OUTPUT:-runs/demo}"
OUTPUT="${OUTPUT%/}"  # runs/demo/ -> runs/demo: "$OUTPUT.prev" must be beside the run, not inside it
CONFIG="${CONFIG:-configs/fashion_mnist_demo.yaml}"

bash scripts/setup.sh

if [[ -f "$OUTPUT/results.json" ]]; then
    rm -rf "$OUTPUT.prev"
    mv "$OUTPUT" "$OUTPUT.prev"
    echo "[main] the previous demo run is now $OUTPUT.prev"
fi
echo "[main] .venv/bin/python train.py --config $CONFIG --output $OUTPUT $*"
START=$SECONDS
PYTHONUNBUFFERED=1 .venv/bin/python train.py --config "$CONFIG" --output "$OUTPUT" "$@"
echo "[main] training took $((SECONDS - START)) s"
if [[ ! -f "$OUTPUT/results.json" ]]; then
    echo "main.sh: training stopped before the end (checkpoint: $OUTPUT/last.pt); run the same command again to" \
        "continue it" >&2
    exit 1
fi
echo
.venv/bin/python scripts/run_summary.py "$OUTPUT"
