#!/usr/bin/env bash
# The newcomer's first run, fully offline: install, train the CNN digit classifier on the bundled MNIST split,
# classify held-back validation digits with it; then show what else convgen does with its zoo: a grid from each
# generator, a before/after restoration of a bundled picture, and the command that opens the web app.
set -euo pipefail
cd "$(dirname "$0")/.."
CONVGEN_EXTRAS=${CONVGEN_EXTRAS:-tensorboard,web} bash scripts/setup.sh
RUN=runs/mnist-classifier
# --resume latest: a second quickstart continues (or simply re-finishes) the same run instead of refusing.
.venv/bin/convgen train configs/classification/mnist-classifier.yaml --out "$RUN" --resume latest
[ -d "$RUN/val-digits" ] || .venv/bin/convgen data export --split val --limit 16 --out "$RUN/val-digits"
.venv/bin/convgen classify "$RUN" --input "$RUN/val-digits"

# The zoo: samples from every generator, and a noisy picture restored.
DEMO=runs/quickstart
mkdir -p "$DEMO"
for m in mnist-dcgan mnist-vae mnist-ddpm cifar10-dcgan; do
    rm -rf "$DEMO/samples-$m"
    .venv/bin/convgen sample "$m" --n 64 --seed 0 --out "$DEMO/samples-$m" --grid "$DEMO/zoo-$m.png" --overwrite
done
rm -rf "$DEMO/samples-mnist-cgan"
.venv/bin/convgen sample mnist-cgan --per-class 8 --seed 0 --out "$DEMO/samples-mnist-cgan" \
    --grid "$DEMO/zoo-mnist-cgan.png" --overwrite
.venv/bin/python scripts/quickstart_demo.py noisy "$DEMO"
.venv/bin/convgen restore denoise denoise-color-blind --input "$DEMO/noisy.png" --output "$DEMO/restored.png" \
    --sigma 25 --overwrite
.venv/bin/python scripts/quickstart_demo.py compare "$DEMO"
echo
echo "Done. Look at $RUN/curves.png (training curves) and $RUN/predictions.png (validation digits + predictions)."
echo "The trained model is in $RUN/model; load it with: convgen.load('$RUN')"
echo "Zoo samples: $DEMO/zoo-*.png; a restoration, before | after | original: $DEMO/before-after.png"
echo "Try every model in your browser:  .venv/bin/convgen serve   (then open http://127.0.0.1:8000/)"
