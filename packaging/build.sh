#!/usr/bin/env bash
# Builds the desktop bundle dist/matchgen-viewer/ with PyInstaller and proves it starts: it renders the viewer
# headless on the bundled demo study with the default model (--screenshot) and checks the exit code.
# Heavy: the bundle holds torch (~1 GB unpacked); on 2 CPU cores the build takes several minutes.
# Usage: bash packaging/build.sh [--no-smoke]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[bundle]"
.venv/bin/pyinstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller packaging/matchgen-viewer.spec
echo "bundle: dist/matchgen-viewer ($(du -sh dist/matchgen-viewer | cut -f1))"
if [ "${1:-}" != "--no-smoke" ]; then
    QT_QPA_PLATFORM=offscreen dist/matchgen-viewer/matchgen-viewer --version
    QT_QPA_PLATFORM=offscreen dist/matchgen-viewer/matchgen-viewer view --device cpu --screenshot dist/bundle-smoke.png
    dist/matchgen-viewer/matchgen-viewer figure resources/demo/demo_t1.nii.gz --mask resources/demo/demo_t1_mask.nii.gz \
        --device cpu --out dist/bundle-smoke.pdf
    echo "smoke test passed: dist/bundle-smoke.png, dist/bundle-smoke.pdf"
fi
