"""Reading and writing studies. ``load_study(path)`` is the one entry point: NIfTI/MGZ files, DICOM files or
folders, PNG/JPEG/TIFF pictures; it returns a :class:`Study` in RAS-canonical order with everything needed to
write results back onto the original grid (:func:`save_mask`, :func:`save_on_study_grid`)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.save import atomic_save_nifti, save_mask, save_on_study_grid
from app.io.study import Study, make_study, one_line

__all__ = [
    "Study",
    "StudyError",
    "atomic_save_nifti",
    "load_mask",
    "load_study",
    "make_study",
    "save_mask",
    "save_on_study_grid",
]


def load_study(path: str | os.PathLike, modality: str | None = None) -> Study:
    """Read a study from a NIfTI/MGZ or NRRD file, a DICOM file or folder, or a 2D picture."""
    p = Path(path)
    if not p.exists():
        raise StudyError(f"{p}: no such file or folder")
    # readers warn about every oddity of a damaged header; the study's own warnings say what matters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _load(p, modality)


def _load(p: Path, modality: str | None) -> Study:
    from app.io.dicom import is_dicom_file, load_dicom
    from app.io.image2d import is_image_path, load_picture
    from app.io.nifti import is_nifti_path, load_nifti
    from app.io.nrrd import is_nrrd_path, load_nrrd

    if p.is_dir():
        return load_dicom(p)
    if p.stat().st_size == 0:
        raise StudyError(f"{p.name}: the file is empty")
    if is_nifti_path(p):
        return load_nifti(p, modality)
    if is_nrrd_path(p):
        return load_nrrd(p, modality)
    if is_image_path(p):
        return load_picture(p)
    if is_dicom_file(p) or p.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return load_dicom(p)
    raise StudyError(
        f"{p.name}: unknown file type (expected .nii/.nii.gz/.mgz, .nrrd/.nhdr, a DICOM file or folder, "
        "or PNG/JPEG/TIFF)"
    )


def load_mask(path: str | os.PathLike, study: Study) -> np.ndarray:
    """A ground-truth mask file on the study's grid -> bool array in the study's canonical order. The mask must
    have the study's original shape and (up to 1e-3 mm) affine. A DICOM SEG file is read onto the DICOM series
    it references (:func:`app.io.seg.read_seg`)."""
    from app.io.seg import is_seg_file, read_seg

    if is_seg_file(path):
        return read_seg(path, study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data, affine = load_study_raw_grid(path)
    if tuple(data.shape[:3]) != tuple(study.original_shape):
        raise StudyError(
            f"{Path(path).name}: mask grid {tuple(data.shape[:3])} differs from the study grid "
            f"{tuple(study.original_shape)}"
        )
    if affine is not None and not np.allclose(affine, study.original_affine, atol=1e-3):
        raise StudyError(f"{Path(path).name}: mask affine differs from the study's (different space or orientation)")
    return study.from_original(data[..., 0] if data.ndim == 4 else data) > 0.5


def load_study_raw_grid(path: str | os.PathLike):
    """(array on its file grid, affine or None) for masks: NIfTI via nibabel, pictures as (H, W, 1)."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"{p}: no such file")
    from app.io.image2d import PICTURE_AFFINE, is_image_path
    from app.io.nifti import is_nifti_path
    from app.io.nrrd import is_nrrd_path, nrrd_grid

    if is_nrrd_path(p):
        data, affine, _, _ = nrrd_grid(p)
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 3:
            raise StudyError(f"{p.name}: a mask must be a 3D volume, got shape {data.shape}")
        return data, affine
    if is_nifti_path(p):
        import nibabel as nib

        from app.io.nifti import quiet_nibabel

        try:
            with quiet_nibabel():
                img = nib.load(str(p))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise StudyError(f"{p.name}: not a readable mask image ({one_line(exc)})") from None
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 2:
            data = data[:, :, None]
        if data.ndim != 3:
            raise StudyError(f"{p.name}: a mask must be a 3D volume, got shape {data.shape}")
        return data, img.affine
    if is_image_path(p):
        from PIL import Image

        try:
            with Image.open(p) as im:
                data = np.asarray(im.convert("L"), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001
            raise StudyError(f"{p.name}: not a readable mask image ({one_line(exc)})") from None
        return (data > 0).astype(np.float32)[:, :, None], PICTURE_AFFINE
    raise StudyError(f"{p.name}: masks must be NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr) or PNG")
