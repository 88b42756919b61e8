"""NRRD (``.nrrd``, and ``.nhdr`` with a detached data file; 3D Slicer's default format) via pynrrd, to a
:class:`Study`, and masks written back as NRRD on the same grid.

The voxel -> world transform is built from the header exactly: column ``j`` of the affine is ``space
directions[j]`` and the translation is ``space origin``, in the header's ``space`` (``left-posterior-superior``
= LPS, Slicer's and DICOM's patient space; ``right-anterior-superior``; ``left-anterior-superior``;
``scanner-xyz`` is DICOM's LPS), then converted to RAS by flipping the signs of the axes that point the other
way (an exact operation on floats). A header with only ``spacings`` has no orientation: the grid is taken as
RAS and the study's warnings say so. A 4D file whose extra axis is RGB becomes an RGB study; a list of volumes
(time, diffusion directions): the first volume, with a warning.

Masks are written in the source file's space (LPS when it had none), with the original grid's directions and
origin, gzip-encoded, atomically (temporary file + rename).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.errors import StudyError
from app.io.study import Study, make_study, one_line

NRRD_SUFFIXES = (".nrrd", ".nhdr")

#: NRRD space name -> the signs that turn its axes into R, A, S
_SPACES = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "scanner-xyz": (-1.0, -1.0, 1.0),
}
_WRITE_NAME = {
    (1.0, 1.0, 1.0): "right-anterior-superior",
    (-1.0, 1.0, 1.0): "left-anterior-superior",
    (-1.0, -1.0, 1.0): "left-posterior-superior",
}


def is_nrrd_path(path: Path) -> bool:
    return Path(path).name.lower().endswith(NRRD_SUFFIXES)


def _space_signs(header: dict) -> tuple[tuple[float, float, float] | None, str]:
    space = str(header.get("space", "") or "").strip().lower()
    if not space:
        return None, ""
    for suffix in ("-time",):
        if space.endswith(suffix):
            space = space[: -len(suffix)]
    if space not in _SPACES:
        raise StudyError(f"NRRD space {header.get('space')!r} is not a patient space (RAS, LAS, LPS, scanner-xyz)")
    return _SPACES[space], space


def _read(path: Path):
    import nrrd

    try:
        data, header = nrrd.read(str(path), index_order="F")
    except nrrd.NRRDError as exc:
        raise StudyError(f"{path.name}: not a readable NRRD file ({one_line(exc)})") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise StudyError(f"{path.name}: not a readable NRRD file ({type(exc).__name__}: {one_line(exc)})") from None
    return np.asarray(data), header


def nrrd_grid(path: Path) -> tuple[np.ndarray, np.ndarray, dict, list[str]]:
    """(data with the spatial axes first (X, Y, Z[, extra]), RAS affine, header, warnings)."""
    data, header = _read(path)
    warnings: list[str] = []
    kinds = [str(k).lower() for k in (header.get("kinds") or [])]
    dirs = header.get("space directions")
    spatial = list(range(data.ndim))
    if dirs is not None:
        dirs = np.asarray(dirs, dtype=np.float64)
        spatial = [i for i in range(data.ndim) if i < len(dirs) and np.all(np.isfinite(dirs[i]))]
    elif kinds:
        spatial = [i for i, k in enumerate(kinds) if k in ("domain", "space")] or spatial
    extra = [i for i in range(data.ndim) if i not in spatial]
    if len(spatial) == 2 and data.ndim == 2:  # one slice
        data = data[:, :, None]
        spatial = [0, 1, 2]
        if dirs is not None:
            normal = np.cross(dirs[0], dirs[1])
            dirs = np.vstack([dirs[:2], normal / max(np.linalg.norm(normal), 1e-12)])
    if len(spatial) != 3:
        raise StudyError(f"{path.name}: {len(spatial)} spatial axes; expected a 2D or 3D image")
    data = np.moveaxis(data, spatial, [0, 1, 2])
    if data.ndim > 3:
        extra_kind = kinds[extra[0]] if extra and extra[0] < len(kinds) else ""
        n = int(np.prod(data.shape[3:]))
        if data.ndim == 4 and data.shape[3] == 3 and extra_kind in ("rgb-color", "3-color", "rgb", "color"):
            pass  # an RGB image
        else:
            warnings.append(f"{path.name} has {n} values per voxel ({extra_kind or 'list'}); using the first only")
            data = data.reshape(*data.shape[:3], -1)[..., 0]
    affine = np.eye(4)
    signs, _ = _space_signs(header)
    if dirs is not None:
        if dirs.shape[1] != 3:
            raise StudyError(f"{path.name}: a {dirs.shape[1]}D world space; expected 3D")
        m = dirs[spatial].T  # columns: voxel axes
        if not np.all(np.isfinite(m)):
            m = np.where(np.isfinite(m), m, 0.0)
            m[2, 2] = m[2, 2] or 1.0
        origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            origin = np.zeros(3)
            warnings.append(f"{path.name}: no usable space origin; the grid starts at 0")
        affine[:3, :3] = m
        affine[:3, 3] = origin
        if signs is None:
            warnings.append(f"{path.name}: space directions without a space; taken as RAS")
        else:
            affine = np.diag([*signs, 1.0]) @ affine
    else:
        sp = header.get("spacings")
        sp = np.asarray(sp, dtype=np.float64)[spatial] if sp is not None else np.ones(3)
        sp = np.where(np.isfinite(sp) & (sp > 0), sp, 1.0)
        affine[:3, :3] = np.diag(sp)
        warnings.append(f"{path.name}: no orientation in the NRRD header (no space directions); taken as RAS")
    return data, affine, header, warnings


def load_nrrd(path: str | os.PathLike, modality: str | None = None) -> Study:
    path = Path(path)
    data, affine, header, warnings = nrrd_grid(path)
    if np.iscomplexobj(data):
        raise StudyError(f"{path.name}: complex-valued images are not supported")
    data = np.asarray(data, dtype=np.float32)
    if modality is None:
        finite = data[np.isfinite(data)]
        lo = float(np.percentile(finite, 1)) if finite.size else 0.0
        modality = "CT" if lo < -500 and finite.size and float(finite.min()) >= -3100 else "MR"
        if data.ndim == 4:
            modality = "OT"
    _, space = _space_signs(header)
    meta = {"format": "NRRD", "nrrd_space": space or None}
    return make_study(data, affine, modality, str(path), warnings, meta=meta)


def nrrd_header_for(affine: np.ndarray, space: str | None = None) -> dict:
    """A pynrrd header for a 3D grid with RAS ``affine``, in ``space`` (default LPS)."""
    signs = _SPACES.get((space or "left-posterior-superior").lower(), _SPACES["lps"])
    world = np.diag([*signs, 1.0]) @ np.asarray(affine, dtype=np.float64)  # RAS -> that space (signs are +-1)
    return {
        "space": _WRITE_NAME[tuple(signs)],
        "space directions": world[:3, :3].T.copy(),
        "space origin": world[:3, 3].copy(),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }


def atomic_save_nrrd(array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, space: str | None = None) -> Path:
    """Save a 3D ``array`` (original grid order) with RAS ``affine`` as ``path`` (.nrrd), atomically."""
    import nrrd

    from app.atomic import atomic_output
    from app.errors import OutputError

    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        raise StudyError(f"{path}: NRRD output must end in .nrrd (a detached .nhdr header is read, not written)")
    if not path.parent.exists():
        raise StudyError(f"{path}: folder {path.parent} does not exist")
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim != 3:
        raise StudyError(f"{path}: only 3D arrays are written as NRRD, got shape {arr.shape}")
    try:
        with atomic_output(path, suffix=".nrrd") as tmp:
            nrrd.write(tmp, arr, nrrd_header_for(affine, space), index_order="F")
    except OutputError as exc:
        raise StudyError(str(exc)) from None
    return path


def save_nrrd_on_study_grid(study: Study, array: np.ndarray, path: str | os.PathLike) -> Path:
    """A canonical-grid array -> NRRD on the study's original grid, in the source NRRD's space (else LPS)."""
    space = (study.meta or {}).get("nrrd_space")
    return atomic_save_nrrd(study.to_original(np.asarray(array)), study.original_affine, path, space)
