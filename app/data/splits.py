"""Slice datasets on disk: ``DIR/SPLIT/images.npy`` (N, C, S, S) float32 in [0, 1], ``DIR/SPLIT/masks.npy``
(N, S, S) uint8 for annotated splits, optionally ``DIR/SPLIT/kinds.npy`` (N, S, S) uint8 per-pixel lesion kinds
(0 = none, 1..5 = ``KINDS`` order: bright, dark, cavity, foreign, mirror), ``DIR/SPLIT/names.json`` (one id per
slice) and ``DIR/meta.json``.

Whole volumes (``DIR/SPLIT_volumes/``, written by ``data brain-proxy`` for val, test and test_b): per lesion
realisation R, every model slice Z of the split's block in order, normal ones included: ``images.npy``
(R, Z, C, S, S) float32, ``masks.npy`` (R, Z, S, S) bool, ``kinds.npy`` (R, Z, S, S) uint8, ``names.json``
(R lists of Z slice ids), ``clean.npy`` (Z, C, S, S) float32 (the same slices of the subject without lesions:
normal slices for false-positive counts) and ``volumes.json`` (split, lesion style, seeds, slice indices z,
kind names, the lesion records of each realisation).

Plain .npy (never pickles) so any tool can read them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from app.atomic import atomic_write, atomic_write_text
from app.data.lesions import KINDS
from app.errors import StudyError
from app.io.study import one_line

SPLITS = ("train", "val", "test")
#: splits with lesion masks, kinds and whole-volume folders in a ``data brain-proxy`` build (test_b: style B lesions)
LESION_SPLITS = ("val", "test", "test_b")
#: label value -> name in ``kinds.npy``
KIND_NAMES = ("none", *KINDS)
REBUILD = "rebuild it with `python main.py data brain-proxy --out DIR`"


@dataclass
class SliceSet:
    images: np.ndarray  # (N, C, S, S) float32 in [0, 1]
    masks: np.ndarray | None  # (N, S, S) bool, or None for unannotated (normal) splits
    names: list[str] = field(default_factory=list)
    split: str = ""
    kinds: np.ndarray | None = None  # (N, S, S) uint8 lesion kind per pixel (KIND_NAMES), where the split has them

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


def _check_kinds(kinds: np.ndarray, masks: np.ndarray) -> str | None:
    """Why a kinds array does not fit its masks (None when it does)."""
    if kinds.shape != masks.shape:
        return f"kinds {kinds.shape} do not match masks {masks.shape}"
    if kinds.size and int(kinds.max()) >= len(KIND_NAMES):
        return f"kind labels must be 0..{len(KIND_NAMES) - 1}"
    if ((kinds > 0) != masks.astype(bool)).any():
        return "kinds disagree with masks (a lesion pixel must have a kind, a normal pixel none)"
    return None


def save_split(
    root: str | os.PathLike,
    split: str,
    images: np.ndarray,
    masks: np.ndarray | None,
    names,
    kinds: np.ndarray | None = None,
) -> None:
    d = Path(root) / split
    d.mkdir(parents=True, exist_ok=True)
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, S, S), got {images.shape}")
    names = [str(n) for n in names]
    if len(names) != images.shape[0]:
        raise ValueError("one name per slice")
    if masks is not None:
        masks = np.asarray(masks).astype(np.uint8)
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    if kinds is not None:
        if masks is None:
            raise ValueError("kinds need masks")
        kinds = np.asarray(kinds).astype(np.uint8)
        if (why := _check_kinds(kinds, masks)) is not None:
            raise ValueError(why)
    _atomic_npy(d / "images.npy", images)
    if masks is not None:
        _atomic_npy(d / "masks.npy", masks)
    if kinds is not None:
        _atomic_npy(d / "kinds.npy", kinds)
    atomic_write_text(d / "names.json", json.dumps(names) + "\n")


def _missing(root: Path, what: Path, split: str) -> StudyError:
    if split == "test_b" and (root / "val").is_dir():
        return StudyError(
            f"{what} not found: {root} was built before the style-B test split (test_b) existed; {REBUILD}"
        )
    return StudyError(f"{what} not found (build the data set first, e.g. `python main.py data brain-proxy`)")


def load_split(root: str | os.PathLike, split: str, mmap: bool = False, require_kinds: bool = False) -> SliceSet:
    """Read one split (train, val, test, test_b, ...); masks are None where the split has none (train), kinds
    None where the build has none (``require_kinds=True``: a StudyError saying to rebuild instead)."""
    root = Path(root)
    d = root / split
    img_path = d / "images.npy"
    if not img_path.is_file():
        raise _missing(root, img_path, split)
    kinds_path = d / "kinds.npy"
    if require_kinds and not kinds_path.is_file():
        raise StudyError(f"{kinds_path} not found: {root} was built before per-pixel lesion kinds existed; {REBUILD}")
    try:
        images = np.load(img_path, allow_pickle=False, mmap_mode="r" if mmap else None)
        masks = np.load(d / "masks.npy", allow_pickle=False) if (d / "masks.npy").is_file() else None
        kinds = np.load(kinds_path, allow_pickle=False) if kinds_path.is_file() else None
    except (OSError, ValueError) as exc:
        raise StudyError(f"{d}: cannot read the split ({one_line(exc)})") from None
    if images.ndim != 4:
        raise StudyError(f"{img_path}: expected (N, C, S, S), got {images.shape}")
    if masks is not None:
        if masks.shape != (images.shape[0], *images.shape[2:]):
            raise StudyError(f"{d}: masks {masks.shape} do not match images {images.shape}")
        masks = masks.astype(bool)
    if kinds is not None:
        why = _check_kinds(kinds, masks) if masks is not None else "kinds without masks"
        if why is not None:
            raise StudyError(f"{d}: {why}")
        kinds = kinds.astype(np.uint8, copy=False)
    names_path = d / "names.json"
    names = json.loads(names_path.read_text()) if names_path.is_file() else [f"{split}-{i}" for i in range(len(images))]
    return SliceSet(
        images=images if mmap else images.astype(np.float32, copy=False),
        masks=masks,
        names=names,
        split=split,
        kinds=kinds,
    )


@dataclass
class VolumeSet:
    """Whole lesion volumes of a split: R lesion realisations of the same block of Z model slices."""

    images: np.ndarray  # (R, Z, C, S, S) float32 in [0, 1]
    masks: np.ndarray  # (R, Z, S, S) bool
    kinds: np.ndarray  # (R, Z, S, S) uint8 (KIND_NAMES)
    names: list[list[str]]  # R lists of Z slice ids
    seeds: list[int]  # lesion seed of each realisation
    z: list[int]  # the study's axial slice index of each of the Z slices
    split: str = ""
    style: str = ""  # lesion generator: "A" (app.data.lesions) or "B" (app.data.lesions_b)
    lesions: list[list[dict]] = field(default_factory=list)  # the lesion records of each realisation
    clean: np.ndarray | None = None  # (Z, C, S, S): the same slices without lesions (None in builds without it)
    slice_mm: float | None = None  # spacing of the axial slices in mm (None in builds before it was recorded)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.images.shape[1])

    def head(self, n: int) -> VolumeSet:
        """The first ``n`` realisations (all of them where there are fewer)."""
        return replace(self, images=self.images[:n], masks=self.masks[:n], kinds=self.kinds[:n], names=self.names[:n],
                       seeds=self.seeds[:n], lesions=self.lesions[:n])  # fmt: skip

    def abnormal(self, r: int) -> np.ndarray:
        """Indices (into Z) of realisation ``r``'s slices with a non-empty ground truth."""
        return np.flatnonzero(self.masks[r].reshape(self.n_slices, -1).any(axis=1))


def volumes_dir(root: str | os.PathLike, split: str) -> Path:
    return Path(root) / f"{split}_volumes"


def save_volumes(
    root: str | os.PathLike,
    split: str,
    images: np.ndarray,
    masks: np.ndarray,
    kinds: np.ndarray,
    names: list[list[str]],
    info: dict,
    clean: np.ndarray | None = None,
) -> Path:
    """Write ``DIR/SPLIT_volumes/``; ``info`` (JSON-able) must hold ``seeds`` and ``z`` (and may hold ``style``,
    ``lesions``, ``slice_mm``: the axial slice spacing); ``clean`` (Z, C, S, S): the block without lesions."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 5:
        raise ValueError(f"images must be (R, Z, C, S, S), got {images.shape}")
    R, Z = images.shape[:2]
    masks = np.asarray(masks).astype(bool)
    kinds = np.asarray(kinds).astype(np.uint8)
    if masks.shape != (R, Z, *images.shape[3:]):
        raise ValueError(f"masks {masks.shape} do not match images {images.shape}")
    if (why := _check_kinds(kinds, masks)) is not None:
        raise ValueError(why)
    if len(names) != R or any(len(n) != Z for n in names):
        raise ValueError("names must be R lists of Z ids")
    if len(info.get("seeds", ())) != R or len(info.get("z", ())) != Z:
        raise ValueError("info needs one seed per realisation and one z per slice")
    if clean is not None:
        clean = np.ascontiguousarray(clean, dtype=np.float32)
        if clean.shape != images.shape[1:]:
            raise ValueError(f"clean {clean.shape} does not match one volume {images.shape[1:]}")
    d = volumes_dir(root, split)
    d.mkdir(parents=True, exist_ok=True)
    _atomic_npy(d / "images.npy", images)
    if clean is not None:
        _atomic_npy(d / "clean.npy", clean)
    _atomic_npy(d / "masks.npy", masks)
    _atomic_npy(d / "kinds.npy", kinds)
    atomic_write_text(d / "names.json", json.dumps([[str(x) for x in n] for n in names]) + "\n")
    atomic_write_text(
        d / "volumes.json", json.dumps({"split": split, "kinds": list(KIND_NAMES), **info}, indent=1) + "\n"
    )
    return d


def load_volumes(root: str | os.PathLike, split: str, mmap: bool = False) -> VolumeSet:
    """Read ``DIR/SPLIT_volumes/`` (val, test, test_b of a ``data brain-proxy`` build)."""
    root = Path(root)
    d = volumes_dir(root, split)
    need = [d / n for n in ("images.npy", "masks.npy", "kinds.npy", "names.json", "volumes.json")]
    missing = [p for p in need if not p.is_file()]
    if missing:
        if (root / "val").is_dir() or (root / "meta.json").is_file():
            raise StudyError(
                f"{missing[0]} not found: {root} has no whole-volume {split} set (built before they existed, or "
                f"{split} is not a lesion split: {', '.join(LESION_SPLITS)}); {REBUILD}"
            )
        raise StudyError(f"{missing[0]} not found (build the data set first, e.g. `python main.py data brain-proxy`)")
    try:
        images = np.load(need[0], allow_pickle=False, mmap_mode="r" if mmap else None)
        masks = np.load(need[1], allow_pickle=False)
        kinds = np.load(need[2], allow_pickle=False)
        names = json.loads(need[3].read_text())
        info = json.loads(need[4].read_text())
        clean = np.load(d / "clean.npy", allow_pickle=False) if (d / "clean.npy").is_file() else None
    except (OSError, ValueError) as exc:
        raise StudyError(f"{d}: cannot read the volumes ({one_line(exc)})") from None
    if images.ndim != 5 or masks.shape != (*images.shape[:2], *images.shape[3:]):
        raise StudyError(f"{d}: images {images.shape} and masks {masks.shape} do not fit (R, Z, C, S, S)")
    if (why := _check_kinds(kinds, masks)) is not None:
        raise StudyError(f"{d}: {why}")
    R, Z = images.shape[:2]
    if clean is not None and clean.shape != images.shape[1:]:
        raise StudyError(f"{d}: clean {clean.shape} does not match one volume {images.shape[1:]}")
    seeds, z = list(info.get("seeds", [])), list(info.get("z", []))
    if len(seeds) != R or len(z) != Z or len(names) != R:
        raise StudyError(f"{d}: volumes.json/names.json do not match {R} realisations of {Z} slices")
    return VolumeSet(
        images=images if mmap else images.astype(np.float32, copy=False),
        masks=masks.astype(bool, copy=False),
        kinds=kinds.astype(np.uint8, copy=False),
        names=names,
        seeds=[int(s) for s in seeds],
        z=[int(k) for k in z],
        split=split,
        style=str(info.get("style", "")),
        lesions=list(info.get("lesions", [])),
        clean=None if clean is None else clean.astype(np.float32, copy=False),
        slice_mm=float(info["slice_mm"]) if isinstance(info.get("slice_mm"), int | float) else None,
    )


def data_layout(root: str | os.PathLike) -> str | None:
    """How a brain-proxy build divides the held-out subject's slices, from its ``meta.json``: e.g.
    ``"interleaved: val z 39-45, 62-69, 85-92; test z 27-34, 50-57, 74-80"``; ``"middle"`` for a build made before
    layouts were recorded (the only layout then); None for other data sets (no brain-proxy meta)."""
    try:
        meta = json.loads((Path(root) / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("name") != "brain-proxy":
        return None
    layout = str(meta.get("layout", "middle"))
    blocks = meta.get("layout_blocks")
    if not isinstance(blocks, dict):
        return layout
    parts = [f"{split} z " + ", ".join(f"{a}-{b}" for a, b in blocks.get(split, [])) for split in ("val", "test")]
    return f"{layout}: " + "; ".join(parts)
