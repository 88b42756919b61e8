"""Opening studies and masks for the viewer and the figures (through :mod:`app.io`), and the bundled demo study
(its folder is :data:`app.data.demo.DEMO_DIR`)."""

from __future__ import annotations

import os
from pathlib import Path

from app.data.demo import DEMO_DIR  # the bundled demo study folder (MATCHGEN_DEMO overrides it)
from app.errors import StudyError
from app.viewer.slices import StudySlices

_MASK_WORDS = ("mask", "seg", "label", "gt", "truth", "lesion")
_SUFFIXES = (".nii", ".nii.gz", ".mgz")


def _is_volume(p: Path) -> bool:
    return p.is_file() and any(p.name.lower().endswith(s) for s in _SUFFIXES)


def demo_paths(demo_dir: Path | None = None) -> tuple[Path, Path | None]:
    """(study, ground-truth mask or None) of the demo folder; the mask is the file whose name says so."""
    d = Path(demo_dir or DEMO_DIR)
    files = sorted(p for p in d.glob("*") if _is_volume(p)) if d.is_dir() else []
    masks = [p for p in files if any(w in p.name.lower() for w in _MASK_WORDS)]
    studies = [p for p in files if p not in masks]
    if not studies:
        raise StudyError(f"no demo study in {d}; open a study with File > Open or `python main.py view STUDY`")
    return studies[0], (masks[0] if masks else None)


def open_study(path: str | os.PathLike, mask: str | os.PathLike | None = None) -> StudySlices:
    from app.io import load_study

    study = load_study(path)
    slices = StudySlices(study)
    if mask is not None:
        slices.gt = open_mask(mask, slices)
    return slices


def open_mask(path: str | os.PathLike, slices: StudySlices):
    from app.io import load_mask

    return slices.check_mask(load_mask(path, slices.study))
