#!/usr/bin/env bash
# Sets up (or refreshes) the project's virtual environment in .venv: the app, its test tools, pinned versions
# from constraints.txt (CPU build of torch). Safe to run again; fast when everything is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
