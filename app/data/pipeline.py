"""Study -> model input, the one path shared by ``detect``, the viewer, the benchmarks and the offline
benchmark builder: brain extraction and bias correction for skull-on brain MRI (:mod:`app.data.preprocess`),
normalise (:mod:`app.data.normalize`), crop to the foreground, slice axially and resample to the model size
(:mod:`app.data.slices`). Results come back with :func:`to_study_grid`; detections are kept inside
:attr:`PreparedStudy.brain` (:func:`restrict_to_brain`), so the scalp is never flagged."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.data.normalize import default_method, normalization_facts, normalize
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
    that maps them back to the study's grid, the brain mask, what preprocessing did and the domain warnings.
    (``app.viewer.slices.ModelInput`` is the other thing: what input a model wants -- size, channels,
    normalisation.)"""

    x: np.ndarray  # (N, C, S, S) float32 in [0, 1]
    geometry: SliceGeometry
    volume: np.ndarray  # the normalised study (X, Y, Z[, C]) in [0, 1]
    method: str  # normalisation used
    brain: np.ndarray | None = None  # bool brain mask on the study grid (None: none found / not brain MRI)
    preprocessing: dict = field(default_factory=dict)  # what the study got (JSON-able; outputs record it)
    warnings: list[str] = field(default_factory=list)  # outside the model's domain (app.data.domain)


def prepare_study(
    study: Study,
    size: int,
    channels: int = 1,
    method: str | None = None,
    slices=None,
    crop: bool = True,
    skull_strip: bool = True,
    bias: bool = True,
    domain=None,
) -> PreparedStudy:
    """Preprocess ``study`` (skull-on brain MRI: N4 + brain extraction unless ``skull_strip`` is False; already
    skull-stripped input is left as it is), normalise it with ``method`` (default: by modality) and cut it into
    model slices. ``domain`` (:class:`app.data.domain.ModelDomain`): the model's training domain; every mismatch
    becomes a line in :attr:`PreparedStudy.warnings`."""
    from app.data.domain import study_contrast
    from app.data.preprocess import preprocess_study

    if study.channels != channels:
        what = "an RGB" if study.channels == 3 else "a single-channel"
        raise StudyError(f"{study.source}: {what} study does not fit a model with {channels} channel(s)")
    method = method or default_method(study.modality)
    pre = preprocess_study(study, skull_strip=skull_strip, bias=bias)
    vol = normalize(pre.volume, method, study.meta.get("bit_depth_max"))
    record = dict(pre.record)
    record["normalization"] = {"method": method, **normalization_facts(pre.volume, method)}
    skull = record.get("skull_strip") or {}
    contrast = study_contrast(study, skull.get("tissue_contrast"), skull.get("tissue_levels"))
    record["contrast"] = contrast.as_dict()
    grey = vol if vol.ndim == 3 else vol.mean(axis=3)
    box = foreground_crop(grey > CROP_THRESHOLD, study.spacing) if crop else None
    g = make_geometry(vol.shape, study.spacing, size, slices=slices, crop=box)
    prep = PreparedStudy(to_model_slices(vol, g), g, vol, method, pre.brain, record, [])
    return for_domain(prep, study, domain)


def for_domain(prep: PreparedStudy, study: Study, domain) -> PreparedStudy:
    """``prep`` (of ``study``) with the warnings for a model trained on ``domain``
    (:class:`app.data.domain.ModelDomain`; None: none) and the domain in its record -- the one place they are
    computed (:func:`prepare_study` and the viewer, whose prepared studies are shared by models with other
    domains). The arrays are shared, not copied."""
    from dataclasses import replace

    from app.data.domain import check_domain

    warnings = check_domain(study, domain, prep.preprocessing) if domain is not None else []
    record = {k: v for k, v in prep.preprocessing.items() if k not in ("model_domain", "warnings")}
    if domain is not None:
        record["model_domain"] = domain.as_dict()
    record["warnings"] = list(warnings)
    return replace(prep, preprocessing=record, warnings=list(warnings))


def restrict_map_to_brain(d: np.ndarray, prep: PreparedStudy) -> np.ndarray:
    """A difference map on the study grid set to 0 outside the brain (unchanged where no brain mask was found)."""
    return d if prep.brain is None else np.where(prep.brain, d, np.float32(0)).astype(np.float32)


def restrict_to_brain(mask: np.ndarray, prep: PreparedStudy) -> np.ndarray:
    """A detection on the study grid kept inside the brain (unchanged where no brain mask was found)."""
    return mask if prep.brain is None else np.asarray(mask, bool) & prep.brain


def to_study_grid(maps: np.ndarray, geometry: SliceGeometry, kind: str = "map") -> np.ndarray:
    """(N, S, S) model-space maps/masks -> the study's canonical grid (X, Y, Z)."""
    return from_model_slices(maps, geometry, kind=kind)


def study_mask_to_model(mask: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    return mask_to_model_slices(mask, geometry)
