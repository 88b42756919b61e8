#!/usr/bin/env bash
# Sets everything up (the virtual environment, and as root on Debian/Ubuntu the Orthanc and dicom3tools the PACS
# tests run: scripts/test-servers.sh), then runs the whole test suite headless (Qt offscreen). Extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/test-servers.sh
export QT_QPA_PLATFORM=offscreen MPLBACKEND=Agg
exec .venv/bin/python -m pytest -q "$@"
