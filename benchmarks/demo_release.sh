#!/usr/bin/env bash
# Issue 9: export the demo training runs (fp16 + style bank) into $EXPORT, score them with evaluate.py against
# colour transfer, and draw the grids. Safe to rerun at any time (each step overwrites its outputs).
#
#   RUNS=/work/runs NAMES="monet vangogh ukiyoe" CLF=/work/runs/classifier/s3e/artworks-mini-scratch96.safetensors \
#       bash benchmarks/demo_release.sh
#
# SKIP_EXPORT=1 scores and draws the checkpoints already in $EXPORT instead (e.g. EXPORT=checkpoints for the
# shipped set, or a release folder mixing steps of different runs).
#
# Shipping is a separate, deliberate step: a checkpoint goes into checkpoints/ only if it passes
#   SVD_WCT_TEST_CHECKPOINTS=$EXPORT python -m pytest tests/test_checkpoints.py
# and the grid shows it (see checkpoints/README.md for the current verdicts), e.g.
#   cp $EXPORT/vangogh.safetensors $EXPORT/vangogh.json checkpoints/
#
# The runs themselves are started/resumed with (one per style, in the background):
#   nice -n 19 python train.py --config configs/demo-NAME.yaml --out "$RUNS" --resume \
#       train.sample_every=250 train.save_every=250 >> "$RUNS/demo-NAME.log" 2>&1 &
# and stopped with `kill -TERM PID` (the trainer saves a checkpoint first), so the newest step is exported.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
EXPORT=${EXPORT:-$RUNS/export}
NAMES=${NAMES:-"monet vangogh ukiyoe"}
DATA=${DATA:-../shared/data/artworks-mini}
CLF=${CLF:-$RUNS/classifier/s3e/artworks-mini-scratch96.safetensors}
MAX_IMAGES=${MAX_IMAGES:-100}
GRID_IMAGES=${GRID_IMAGES:-12}   # grid rows / artefact scores (the evaluate.py scores use MAX_IMAGES test photos)
NICE=${NICE:-"nice -n 19"}

ckpts=(); specs=()
for n in $NAMES; do
  if [ "${SKIP_EXPORT:-0}" = 1 ]; then  # score the files already in $EXPORT (e.g. the shipped set)
    [ -f "$EXPORT/$n.safetensors" ] || { echo "SKIP_EXPORT=1 but $EXPORT/$n.safetensors is missing" >&2; exit 2; }
  else
    case $n in vangogh) prefix="Van Gogh" ;; ukiyoe) prefix="Ukiyo-e" ;; *) prefix="" ;; esac  # bank display names
    $NICE python train.py export --run "$RUNS/demo-$n" --out "$EXPORT/$n.safetensors" --fp16 \
      ${prefix:+--bank-prefix "$prefix"}
  fi
  ckpts+=(--checkpoint "$EXPORT/$n.safetensors")
  specs+=(--checkpoint "svd-wct demo=$EXPORT/$n.safetensors@$n")
done
# shellcheck disable=SC2086
$NICE python evaluate.py stylize-and-score "${specs[@]}" --checkpoint "colour transfer=color" \
  --classifier "$CLF" --data "$DATA" --domains $NAMES --max-images "$MAX_IMAGES" --lpips-weights none \
  --save-samples 0 --out benchmarks/results/demo_eval
$NICE python benchmarks/demo_grid.py grid "${ckpts[@]}" --data "$DATA" --max-images "$GRID_IMAGES" \
  --out benchmarks/results/demo_grid
