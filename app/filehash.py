"""The SHA-256 of a file, read in chunks (weights files are megabytes): what records name a model, card or study
file by (batch results, ensemble cards, triage measurements)."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
