"""Writing masks and maps as NIfTI (or NRRD: a ``.nrrd`` name, :mod:`app.io.nrrd`) on the study's *original*
grid and affine, atomically (temporary file in the
same folder, then rename), so a failure never leaves a half-written file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.atomic import atomic_output
from app.errors import OutputError, StudyError
from app.io.study import Study


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for s in (".nii.gz", ".nii"):
        if name.endswith(s):
            return s
    raise StudyError(f"{path}: output must end in .nii, .nii.gz or .nrrd")


def atomic_save_nifti(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Save ``array`` with ``affine`` to ``path`` via a temporary file and os.replace."""
    import nibabel as nib

    path = Path(path)
    _nifti_suffix(path)
    if not path.parent.exists():
        raise StudyError(f"{path}: folder {path.parent} does not exist")
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    try:
        with atomic_output(path) as tmp:
            nib.save(img, tmp)
    except OutputError as exc:
        raise StudyError(str(exc)) from None
    return path


def save_on_study_grid(study: Study, array: np.ndarray, path: str | os.PathLike, dtype=None) -> Path:
    """A canonical-grid array (X, Y, Z) -> NIfTI with the study's original shape and affine. Masks (bool) are
    written as uint8 0/1; maps as float32 unless ``dtype`` says otherwise."""
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif dtype is None:
        arr = arr.astype(np.float32)
    if dtype is not None:
        arr = arr.astype(dtype)
    if str(path).lower().endswith(".nrrd"):  # NRRD out (e.g. for 3D Slicer), in the source NRRD's space
        from app.io.nrrd import save_nrrd_on_study_grid

        return save_nrrd_on_study_grid(study, arr, path)
    return atomic_save_nifti(study.to_original(arr), study.original_affine, path)


def save_mask(study: Study, mask: np.ndarray, path: str | os.PathLike) -> Path:
    return save_on_study_grid(study, np.asarray(mask).astype(bool), path)
