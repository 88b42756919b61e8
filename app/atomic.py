"""Writing output files atomically, the one helper every writer uses (weights, cards, training state, masks,
maps, slice sets, reports, figures, screenshots).

The content goes into a temporary file beside the target (same folder, so the rename stays on one file system),
which is then renamed over the target with :func:`os.replace`: a reader sees the old file or the new one, never a
half-written one, and a failure (full disk, a crash, Ctrl-C) leaves the old file untouched and no temporary
behind. The new file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask), not
the ``0o600`` of :func:`tempfile.mkstemp`.

Errors are :class:`~app.errors.OutputError` with the exact cause: the folder does not exist, permission denied,
no space left, the target is a folder.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from app.errors import OutputError

__all__ = ["atomic_output", "atomic_write", "atomic_write_bytes", "atomic_write_text", "current_umask"]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on Linux);
    elsewhere by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _describe(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(exc, IsADirectoryError):
        return "it is a folder"
    return exc.strerror or str(exc)


@contextmanager
def atomic_output(path: str | os.PathLike, *, mkdir: bool = False, suffix: str | None = None) -> Iterator[str]:
    """``with atomic_output("fig.pdf") as tmp: write(tmp)``: ``tmp`` is a path in the target's folder with the
    target's suffix (``suffix`` overrides it; writers that pick a format by name need it). On success the file is
    renamed to ``path``; on any exception it is removed and ``path`` is untouched. ``mkdir`` creates missing
    parent folders; without it a missing folder is an :class:`OutputError`."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {p}: it is a folder")
    if mkdir:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {p.parent}: {_describe(exc)}") from None
    elif not p.parent.is_dir():
        raise OutputError(f"cannot write {p}: folder {p.parent} does not exist")
    if suffix is None:
        name = p.name.lower()
        suffix = ".nii.gz" if name.endswith(".nii.gz") else p.suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {p}: {_describe(exc)}") from None
    os.close(fd)
    try:
        try:
            yield tmp
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, p)
        except OSError as exc:
            raise OutputError(f"cannot write {p}: {_describe(exc)}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, mkdir: bool = True) -> Path:
    """``write(tmp_path)`` fills a temporary file that then replaces ``path`` (see the module docstring).
    Parent folders are created unless ``mkdir`` is False."""
    with atomic_output(path, mkdir=mkdir) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, mkdir: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), mkdir=mkdir)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mkdir: bool = True) -> Path:
    """Write ``data`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), mkdir=mkdir)
