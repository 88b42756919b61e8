"""Slice datasets on disk: ``DIR/SPLIT/images.npy`` (N, C, S, S) float32 in [0, 1], ``DIR/SPLIT/masks.npy``
(N, S, S) uint8 for annotated splits, ``DIR/SPLIT/names.json`` (one id per slice) and ``DIR/meta.json``.
Plain .npy (never pickles) so any tool can read them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.atomic import atomic_write, atomic_write_text
from app.errors import StudyError
from app.io.study import one_line

SPLITS = ("train", "val", "test")


@dataclass
class SliceSet:
    images: np.ndarray  # (N, C, S, S) float32 in [0, 1]
    masks: np.ndarray | None  # (N, S, S) bool, or None for unannotated (normal) splits
    names: list[str] = field(default_factory=list)
    split: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def abnormal(self) -> np.ndarray:
        """Indices of slices with a non-empty ground truth."""
        if self.masks is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.masks.reshape(len(self), -1).any(axis=1))


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda tmp: np.save(tmp, arr, allow_pickle=False))


def save_split(root: str | os.PathLike, split: str, images: np.ndarray, masks: np.ndarray | None, names) -> None:
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, S, S), got {images.shape}")
    _atomic_npy(d / "images.npy", images)
    if masks is not None:
        masks = np.asarray(masks).astype(np.uint8)
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
        _atomic_npy(d / "masks.npy", masks)
    names = [str(n) for n in names]
    if len(names) != images.shape[0]:
        raise ValueError("one name per slice")
    atomic_write_text(d / "names.json", json.dumps(names) + "\n")


def load_split(root: str | os.PathLike, split: str, mmap: bool = False) -> SliceSet:
    """Read one split; masks are None where the split has none (train)."""
    d = Path(root) / split
    img_path = d / "images.npy"
    if not img_path.is_file():
        raise StudyError(f"{img_path} not found (build the data set first, e.g. `python main.py data brain-proxy`)")
    try:
        images = np.load(img_path, allow_pickle=False, mmap_mode="r" if mmap else None)
        masks = np.load(d / "masks.npy", allow_pickle=False) if (d / "masks.npy").is_file() else None
    except (OSError, ValueError) as exc:
        raise StudyError(f"{d}: cannot read the split ({one_line(exc)})") from None
    if images.ndim != 4:
        raise StudyError(f"{img_path}: expected (N, C, S, S), got {images.shape}")
    if masks is not None:
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise StudyError(f"{d}: masks {masks.shape} do not match images {images.shape}")
        masks = masks.astype(bool)
    names_path = d / "names.json"
    names = json.loads(names_path.read_text()) if names_path.is_file() else [f"{split}-{i}" for i in range(len(images))]
    return SliceSet(
        images=images if mmap else images.astype(np.float32, copy=False), masks=masks, names=names, split=split
    )
