#!/usr/bin/env bash
# Installs the built bundle's launcher for the current user: the .desktop entry and the icon (freedesktop paths).
# Run after packaging/build.sh. Undo by deleting the three paths it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(pwd)/dist/matchgen-viewer/matchgen-viewer"
[ -x "$BIN" ] || { echo "build the bundle first: bash packaging/build.sh" >&2; exit 2; }
APPS="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
ICONS="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
mkdir -p "$APPS" "$ICONS"
install -m 644 resources/icons/matchgen.png "$ICONS/matchgen-viewer.png"
sed "s|^Exec=matchgen-viewer|Exec=$BIN|" packaging/matchgen-viewer.desktop > "$APPS/matchgen-viewer.desktop"
echo "$APPS/matchgen-viewer.desktop"
echo "$ICONS/matchgen-viewer.png"
echo "$BIN"
