#!/usr/bin/env bash
# Trains the bundled model zoo, one model at a time, exactly as shipped in models/ (see docs/models.md).
# Usage: bash models/train_zoo.sh DATA_DIR [LOG_DIR] [NAMES...]   (DATA_DIR from `python main.py data brain-proxy`)
# Each model gets a wall-clock budget (--time-limit, seconds of training) sized for a 2-core CPU shared with
# other work; one torch thread is much faster than two when the cores are busy.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: train_zoo.sh DATA_DIR [LOG_DIR] [NAMES...]}
LOGS=${2:-/tmp/train-logs}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$LOGS"
PY=${PYTHON:-.venv/bin/python}
LIMIT=${TIME_LIMIT:-300}
COMMON=(--data "$DATA" --epochs 20 --batch-size 16 --seed 0 --device cpu --threads 1 --time-limit "$LIMIT" --quiet)
declare -A ARGS=(
  [ae-l1]="ae-l1 --width 8 --latent-dim 128"
  [ce-ae]="ce-ae --width 8 --latent-dim 128 --set erase_fraction=0.25"
  [vae]="vae --width 8 --latent-dim 128 --set kl_weight=1e-5"
  [vae-grad]="vae-grad --width 8 --latent-dim 128 --set kl_weight=1e-5 --set grad_sigma=2"
  [dae]="dae --width 16 --set noise_std=0.2 --set noise_res=16"
  [ganomaly]="ganomaly --width 8 --latent-dim 128"
  [ddgan]="ddgan --width 8 --latent-dim 32 --lr 1e-3 --set steps=4 --set t_start=2 --set train_t_max=2 --set w_rec=50 --set noise_seed=0"
)
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(ae-l1 ce-ae vae vae-grad dae ganomaly ddgan)
# dae was retrained with on-the-fly scanner variation (the default --domain-augment 1) and early stopping on the
# validation AP instead of a time limit: at most 15 epochs, patience 3, 2 threads (it stopped after 6, kept 3)
DAE_COMMON=(--data "$DATA" --epochs 15 --patience 3 --batch-size 16 --seed 0 --device cpu --threads 2 --quiet)
for name in "${NAMES[@]}"; do
  if [ "$name" = dae ]; then RUN=("${DAE_COMMON[@]}"); else RUN=("${COMMON[@]}"); fi
  # shellcheck disable=SC2086
  echo "$(date -u +%FT%TZ) start $name" | tee -a "$LOGS/zoo.log"
  $PY main.py train ${ARGS[$name]} --out "models/$name" "${RUN[@]}" > "$LOGS/$name.log" 2>&1 \
    && echo "$(date -u +%FT%TZ) done $name" | tee -a "$LOGS/zoo.log" \
    || echo "$(date -u +%FT%TZ) FAILED $name" | tee -a "$LOGS/zoo.log"
done
