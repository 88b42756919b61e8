"""The :class:`Study`: one image volume in RAS-canonical voxel order plus what is needed to go back.

Every reader (NIfTI, DICOM, 2D images) produces a Study. Its ``data`` is float32 (X, Y, Z) or (X, Y, Z, 3) with
the first axis pointing to the patient's Right, the second Anterior, the third Superior (nibabel's "RAS+"), so
``data[:, :, k]`` is always an axial slice whatever the file's orientation. Only axes are permuted and flipped
(never resampled), so results map back onto the original voxels exactly: :meth:`Study.to_original`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nibabel import orientations as ornt_mod

from app.errors import StudyError

RAS_ORNT = ornt_mod.axcodes2ornt(("R", "A", "S"))


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    """A library's exception text as one short line (errors are shown as a single line on stderr)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Study:
    data: np.ndarray  # float32 (X, Y, Z) or (X, Y, Z, 3), RAS-canonical, raw units (HU for CT)
    affine: np.ndarray  # (4, 4) voxel -> world (RAS mm) of ``data``
    modality: str  # "MR", "CT" or "OT" (photographs, OCT, unknown)
    source: str  # path or description it was read from
    original_affine: np.ndarray
    original_shape: tuple[int, ...]  # spatial shape of the file's grid (3 axes)
    ornt: np.ndarray  # nibabel orientation: original axes -> RAS
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # reader-specific facts (series description, window, ...)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape[:3])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the canonical axes (X, Y, Z)."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore

    @property
    def channels(self) -> int:
        return 3 if self.data.ndim == 4 else 1

    @property
    def original_axcodes(self) -> tuple[str, ...]:
        return tuple(ornt_mod.aff2axcodes(self.original_affine))

    def _check_spatial(self, arr: np.ndarray, shape: tuple[int, ...], what: str) -> None:
        if tuple(arr.shape[:3]) != tuple(shape):
            raise StudyError(f"{what} has shape {tuple(arr.shape[:3])}, the study grid is {tuple(shape)}")

    def to_original(self, arr: np.ndarray) -> np.ndarray:
        """An array on the canonical grid (X, Y, Z[, ...]) -> the same values on the file's original grid."""
        arr = np.asarray(arr)
        self._check_spatial(arr, self.shape, "array")
        back = ornt_mod.ornt_transform(RAS_ORNT, self.ornt)
        return np.ascontiguousarray(ornt_mod.apply_orientation(arr, back))

    def from_original(self, arr: np.ndarray) -> np.ndarray:
        """An array on the file's original grid -> canonical order (e.g. a ground-truth mask in the same space)."""
        arr = np.asarray(arr)
        self._check_spatial(arr, self.original_shape, "array")
        return np.ascontiguousarray(ornt_mod.apply_orientation(arr, self.ornt))


def make_study(
    data: np.ndarray,
    affine: np.ndarray,
    modality: str,
    source: str,
    warnings: list[str] | None = None,
    meta: dict | None = None,
) -> Study:
    """Reorient a volume on its original grid (3 spatial axes [+ RGB]) to RAS and check it is usable."""
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    if data.ndim not in (3, 4) or (data.ndim == 4 and data.shape[3] != 3):
        raise StudyError(f"{source}: expected a 3D volume or an RGB image, got an array of shape {data.shape}")
    if min(data.shape[:3]) < 1 or data.size == 0:
        raise StudyError(f"{source}: the image is empty (shape {data.shape})")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise StudyError(f"{source}: the voxel-to-world transform is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise StudyError(f"{source}: the voxel-to-world transform is singular (zero voxel size?)")
    data = data.astype(np.float32, copy=False)
    warnings = list(warnings or [])
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        if not finite.any():
            raise StudyError(f"{source}: every voxel is NaN or infinite")
        # e.g. outside the field of view after resampling: fill with the lowest real value, and say so
        data = np.where(finite, data, np.float32(data[finite].min()))
        warnings.append(f"{bad} NaN/infinite voxels set to the image minimum")
    if float(data.max()) == float(data.min()):
        raise StudyError(f"{source}: the image is constant ({float(data.min()):g} everywhere); nothing to analyse")
    try:
        ornt = ornt_mod.io_orientation(affine)
        canon = np.ascontiguousarray(ornt_mod.apply_orientation(data, ornt))
        canon_affine = affine @ ornt_mod.inv_ornt_aff(ornt, data.shape[:3])
    except (ornt_mod.OrientationError, ValueError, np.linalg.LinAlgError) as exc:
        raise StudyError(f"{source}: no usable orientation in the voxel-to-world transform ({one_line(exc)})") from None
    return Study(
        data=canon,
        affine=canon_affine,
        modality=modality,
        source=str(source),
        original_affine=affine,
        original_shape=tuple(int(s) for s in data.shape[:3]),
        ornt=ornt,
        warnings=warnings,
        meta=dict(meta or {}),
    )
