#!/usr/bin/env bash
# Builds the desktop bundle dist/matchgen-viewer/ with PyInstaller and proves it starts, from a folder outside the
# source tree (so only what is inside the bundle is used): --version, the viewer rendered headless on the bundled
# demo with the default model (--screenshot, timed), a base-model detect and Figure 2 on the bundled demo study.
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
    BUNDLE="$(pwd)/dist/matchgen-viewer"
    EXE="$BUNDLE/matchgen-viewer"
    DEMO=$(find "$BUNDLE" -path "*/app/_bundled/demo" -type d | head -n 1)
    [ -n "$DEMO" ] || { echo "the bundle has no app/_bundled/demo" >&2; exit 1; }
    SMOKE="$(pwd)/dist/smoke"
    rm -rf "$SMOKE" && mkdir -p "$SMOKE"
    WORK=$(mktemp -d)
    cd "$WORK"  # outside the source tree
    export QT_QPA_PLATFORM=offscreen
    "$EXE" --version
    start=$(date +%s.%N)
    "$EXE" view --device cpu --screenshot "$SMOKE/bundle-smoke.png"
    echo "start to screenshot: $(echo "$(date +%s.%N) - $start" | bc) s"
    "$EXE" detect "$DEMO/demo_t1.nii.gz" --mask "$DEMO/demo_t1_mask.nii.gz" --base-only --device cpu \
        --out "$SMOKE/bundle-smoke-mask.nii.gz"
    "$EXE" figure "$DEMO/demo_t1.nii.gz" --mask "$DEMO/demo_t1_mask.nii.gz" --device cpu --out "$SMOKE/bundle-smoke.pdf"
    cd - >/dev/null && rm -rf "$WORK"
    echo "smoke test passed: $SMOKE (bundle-smoke.png, bundle-smoke-mask.nii.gz, bundle-smoke.pdf)"
fi
