#!/usr/bin/env bash
# The newcomer's first run, fully offline: install, train the CNN digit classifier on the bundled MNIST split,
# then classify held-back validation digits with it. Outputs land in runs/mnist-classifier/.
set -euo pipefail
cd "$(dirname "$0")/.."
CONVGEN_EXTRAS=${CONVGEN_EXTRAS:-tensorboard} bash scripts/setup.sh
RUN=runs/mnist-classifier
# --resume latest: a second quickstart continues (or simply re-finishes) the same run instead of refusing.
.venv/bin/convgen train configs/classification/mnist-classifier.yaml --out "$RUN" --resume latest
[ -d "$RUN/val-digits" ] || .venv/bin/convgen data export --split val --limit 16 --out "$RUN/val-digits"
.venv/bin/convgen classify "$RUN" --input "$RUN/val-digits"
echo
echo "Done. Look at $RUN/curves.png (training curves) and $RUN/predictions.png (validation digits + predictions)."
echo "The trained model is in $RUN/model; load it with: convgen.load('$RUN')"
