"""Writing output files atomically: into a temporary file beside the target, then renamed, so a failure never
leaves a half-written figure, screenshot or export; the result gets the permissions a plain open() would give."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.errors import OptionError


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """``with atomic_output("fig.pdf") as tmp: write(tmp)``: ``tmp`` has the same suffix as the target."""
    p = Path(path)
    if not p.parent.is_dir():
        raise OptionError(f"{p}: folder {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=p.suffix, dir=p.parent)
    os.close(fd)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, p)
    finally:
        Path(tmp).unlink(missing_ok=True)
