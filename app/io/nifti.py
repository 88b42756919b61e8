"""NIfTI-1/2 (.nii, .nii.gz), MGH/MGZ and anything else nibabel reads, to a :class:`Study`."""

from __future__ import annotations

import gzip
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.study import Study, make_study, one_line

#: refuse headers claiming more voxels than this (2^31: 8 GiB as float32) instead of trying to allocate them
MAX_VOXELS = 2**31

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz", ".mgh", ".img", ".hdr")


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


def _guess_modality(data: np.ndarray, header) -> str:
    """NIfTI has no modality field: a volume reaching well below zero with air near -1000 is CT."""
    descrip = ""
    try:
        descrip = bytes(header.get("descrip", b"")).decode("ascii", "ignore").lower()
    except Exception:  # noqa: BLE001 - the description is a hint only
        pass
    if "ct" in descrip.split():
        return "CT"
    lo = float(np.percentile(data, 1))
    return "CT" if lo < -500 and float(data.min()) >= -3100 else "MR"


@contextmanager
def quiet_nibabel():
    """nibabel logs each header repair to stderr (its global logger); the CLI must print one line only.
    (nibabel's own LoggingOutputSuppressor leaves Python's last-resort handler printing.)"""
    from nibabel.imageglobals import logger

    old = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = old


def load_nifti(path: Path, modality: str | None = None) -> Study:
    with quiet_nibabel():
        return _load_nifti(path, modality)


def _load_nifti(path: Path, modality: str | None = None) -> Study:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    warnings: list[str] = []
    try:
        img = nib.load(str(path))
        n_vox = int(np.prod([int(v) for v in img.shape], dtype=np.float64)) if img.shape else 0
        if n_vox > MAX_VOXELS:
            raise StudyError(f"{path.name}: header claims {n_vox:,} voxels (shape {img.shape}); damaged or too large")
        data = np.asanyarray(img.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise StudyError(f"{path.name}: not a readable NIfTI/MGH image ({one_line(exc)})") from None
    except StudyError:
        raise
    except MemoryError:
        raise StudyError(f"{path.name}: too large to load into memory") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on corrupt headers
        raise StudyError(
            f"{path.name}: cannot be read as a NIfTI/MGH image ({type(exc).__name__}: {one_line(exc)})"
        ) from None
    if getattr(img, "affine", None) is None and not hasattr(img, "affine"):
        raise StudyError(f"{path.name}: a {type(img).__name__} is not a volume image")
    if data.size == 0:
        raise StudyError(f"{path.name}: the image is empty (shape {data.shape})")
    if np.iscomplexobj(data):
        raise StudyError(f"{path.name}: complex-valued images are not supported")
    if data.dtype.names is not None:  # RGB NIfTI (rgb24)
        data = np.stack([data[n] for n in data.dtype.names[:3]], axis=-1)
        if data.ndim != 4:
            raise StudyError(f"{path.name}: an RGB NIfTI must be 3D")
    else:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 2:
            data = data[:, :, None]
        elif data.ndim > 3:
            n = int(np.prod(data.shape[3:]))
            warnings.append(f"{path.name} is 4D ({n} volumes); using the first volume only")
            data = data.reshape(*data.shape[:3], -1)[..., 0]
        elif data.ndim < 2:
            raise StudyError(f"{path.name}: a {data.ndim}D array is not an image")
    affine = img.affine
    if affine is None:
        affine = np.eye(4)
    try:
        data = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise StudyError(f"{path.name}: voxel data cannot be converted to numbers ({one_line(exc)})") from None
    mod = modality or (_guess_modality(data, img.header) if data.ndim == 3 and np.isfinite(data).all() else "MR")
    return make_study(data, affine, mod, str(path), warnings, meta={"format": type(img).__name__})
