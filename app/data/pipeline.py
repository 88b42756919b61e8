"""Study -> model input, the one path shared by ``detect``, the viewer, the benchmarks and the offline
benchmark builder: normalise (:mod:`app.data.normalize`), crop to the foreground, slice axially and resample to
the model size (:mod:`app.data.slices`). Results come back with :func:`to_study_grid`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.data.normalize import default_method, normalize_study
from app.data.slices import (
    SliceGeometry,
    foreground_crop,
    from_model_slices,
    make_geometry,
    mask_to_model_slices,
    to_model_slices,
)
from app.errors import StudyError
from app.foreground import FOREGROUND_THRESHOLD
from app.io.study import Study

#: voxels of the normalised volume above this are "foreground" for cropping (the one foreground threshold)
CROP_THRESHOLD = FOREGROUND_THRESHOLD


@dataclass
class PreparedStudy:
    """A study made ready for a model (what :func:`prepare_study` returns): model-sized slices and the geometry
    that maps them back to the study's grid. (``app.viewer.slices.ModelInput`` is the other thing: what input a
    model wants -- size, channels, normalisation.)"""

    x: np.ndarray  # (N, C, S, S) float32 in [0, 1]
    geometry: SliceGeometry
    volume: np.ndarray  # the normalised study (X, Y, Z[, C]) in [0, 1]
    method: str  # normalisation used


def prepare_study(
    study: Study,
    size: int,
    channels: int = 1,
    method: str | None = None,
    slices=None,
    crop: bool = True,
) -> PreparedStudy:
    """Normalise ``study`` with ``method`` (default: by modality) and cut it into model slices."""
    if study.channels != channels:
        what = "an RGB" if study.channels == 3 else "a single-channel"
        raise StudyError(f"{study.source}: {what} study does not fit a model with {channels} channel(s)")
    method = method or default_method(study.modality)
    vol = normalize_study(study, method)
    grey = vol if vol.ndim == 3 else vol.mean(axis=3)
    box = foreground_crop(grey > CROP_THRESHOLD, study.spacing) if crop else None
    g = make_geometry(vol.shape, study.spacing, size, slices=slices, crop=box)
    return PreparedStudy(to_model_slices(vol, g), g, vol, method)


def to_study_grid(maps: np.ndarray, geometry: SliceGeometry, kind: str = "map") -> np.ndarray:
    """(N, S, S) model-space maps/masks -> the study's canonical grid (X, Y, Z)."""
    return from_model_slices(maps, geometry, kind=kind)


def study_mask_to_model(mask: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    return mask_to_model_slices(mask, geometry)
