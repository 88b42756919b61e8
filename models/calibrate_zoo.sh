#!/usr/bin/env bash
# Calibrates the bundled models on the validation split (eps range, eps/tau chosen by Dice; see docs/models.md).
# Usage: bash models/calibrate_zoo.sh DATA_DIR [LOG_DIR] [NAMES...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: calibrate_zoo.sh DATA_DIR [LOG_DIR] [NAMES...]}
LOGS=${2:-/tmp/train-logs}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$LOGS"
PY=${PYTHON:-.venv/bin/python}
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(ae-l1 ce-ae vae vae-grad dae ganomaly ddgan)
for name in "${NAMES[@]}"; do
  # the U-Net decoders (dae, ddgan) cost ~10x more per solver step: fewer steps for them (the dae: 12, as good as
  # 40 on validation volumes no choice saw, docs/models.md)
  case $name in
    dae) COST=(--subset 32 --max-steps 12 --calibrate-steps 24) ;;
    ddgan) COST=(--subset 32 --max-steps 40 --calibrate-steps 80) ;;
    *) COST=(--subset 32 --max-steps 100 --calibrate-steps 200) ;;
  esac
  echo "$(date -u +%FT%TZ) calibrate $name" | tee -a "$LOGS/zoo.log"
  $PY main.py calibrate "$name" --data "$DATA" "${COST[@]}" --solver fast --device cpu --threads 1 \
    > "$LOGS/calibrate-$name.log" 2>&1 \
    && echo "$(date -u +%FT%TZ) calibrated $name" | tee -a "$LOGS/zoo.log" \
    || echo "$(date -u +%FT%TZ) calibration FAILED $name" | tee -a "$LOGS/zoo.log"
done
