#!/usr/bin/env bash
# The programs the test suite runs beside Python: a real Orthanc with its DICOMweb plugin (the PACS tests start one)
# and dciodvfy from dicom3tools (it validates the DICOM SEGs the app writes). Installed with apt-get where that can
# be done here (root on Debian/Ubuntu); elsewhere this says which tests will skip and how to install them. Runs
# after scripts/setup.sh (it asks the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
# what the PACS tests look for, asked of the module they ask (app/pacs/orthanc.py: its binary and plugin paths)
read -r -a need <<< "$(.venv/bin/python -m app.pacs.orthanc)"
command -v dciodvfy >/dev/null || need+=(dicom3tools)
[ ${#need[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing the test servers: ${need[*]} (apt-get)" >&2
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
        echo "apt-get could not install ${need[*]}; the PACS tests that need them will be skipped (CI=true: fail)" >&2
    fi
else
    echo "not installed: ${need[*]}; the PACS tests that need them will be skipped (CI=true: fail)." \
        "Install with: sudo apt-get install ${need[*]}" >&2
fi
