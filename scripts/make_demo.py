"""Rebuild resources/demo/ (the bundled demo study and its ground-truth mask) from the Debian package
insighttoolkit5-examples (fetched into the cache with apt-get download + dpkg -x). Run from the repository root:
``python scripts/make_demo.py [OUT_DIR]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.data.demo import make_demo  # noqa: E402

if __name__ == "__main__":
    study, mask = make_demo(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"wrote {study} and {mask}")
