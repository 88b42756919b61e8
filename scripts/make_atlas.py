"""Rebuild resources/atlas/ (the 2 mm MNI152 2009a T1 template and its brain mask that ship with the app) from
the nilearn wheel (fetched into the cache with pip download --no-deps). Run from the repository root:
``python scripts/make_atlas.py [OUT_DIR]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.data.atlas import make_atlas  # noqa: E402

if __name__ == "__main__":
    make_atlas(sys.argv[1] if len(sys.argv) > 1 else None)
