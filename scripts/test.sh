#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite headless (Qt offscreen). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
