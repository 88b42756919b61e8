"""Intensity normalisation to [0, 1], the same in training and detection.

- MRI ("mri-percentile"): the foreground is every voxel above 5 % of the 99th percentile of the non-zero
  voxels (drops air and the zero background of skull-stripped images); intensities are divided by the 99.5th
  percentile of the foreground and clipped to [0, 1] (negative values, rare in MRI, are clipped to 0).
  Robust to a few very bright voxels, and a skull-stripped brain ends up with white matter near 0.8-0.9.
- CT ("ct-window:NAME"): Hounsfield units through a window (level L, width W): (HU - (L - W/2)) / W, clipped.
  Presets are those of radiology viewers: brain (L 40, W 80), soft-tissue (L 50, W 400), bone (L 400, W 1800).
- Pictures ("unit"): divided by the maximum of their integer type (255 for 8-bit), else min-max.

A model card's ``config.normalization`` names the method, so ``detect`` normalises a study exactly the way the
model's training data were normalised.
"""

from __future__ import annotations

import numpy as np

from app.errors import OptionError, StudyError

#: (level, width) in HU
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft-tissue": (50.0, 400.0),
    "bone": (400.0, 1800.0),
}

MRI_PERCENTILE = 99.5
FOREGROUND_FRACTION = 0.05


def mri_foreground(volume: np.ndarray) -> np.ndarray:
    """Voxels above 5 % of the 99th percentile of the non-zero voxels."""
    v = np.asarray(volume, dtype=np.float32)
    nz = v[v > 0]
    if nz.size == 0:
        raise StudyError("the image has no positive intensities; cannot normalise it as MRI")
    return v > FOREGROUND_FRACTION * float(np.percentile(nz, 99))


def normalize_mri(volume: np.ndarray, percentile: float = MRI_PERCENTILE) -> np.ndarray:
    v = np.asarray(volume, dtype=np.float32)
    fg = mri_foreground(v)
    top = float(np.percentile(v[fg], percentile)) if fg.any() else float(v.max())
    if not top > 0:
        raise StudyError("the image's foreground has no positive intensity; cannot normalise it as MRI")
    return np.clip(v / top, 0.0, 1.0).astype(np.float32)


def normalization_facts(volume: np.ndarray, method: str) -> dict:
    """What a normalisation did to this volume (for the record outputs keep): the MRI scale (the foreground's
    99.5th percentile, which maps to 1) and the foreground fraction; the CT window."""
    if method == "mri-percentile":
        v = np.asarray(volume, dtype=np.float32)
        try:
            fg = mri_foreground(v)
        except StudyError:
            return {}
        top = float(np.percentile(v[fg], MRI_PERCENTILE)) if fg.any() else float(v.max())
        return {"scale": round(top, 4), "percentile": MRI_PERCENTILE, "foreground_fraction": round(float(fg.mean()), 4)}
    if method.startswith("ct-window"):
        name = method.partition(":")[2] or "brain"
        if name in CT_WINDOWS:
            return {"level": CT_WINDOWS[name][0], "width": CT_WINDOWS[name][1]}
    return {}


def normalize_ct(volume: np.ndarray, window: str | tuple[float, float] = "brain") -> np.ndarray:
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise OptionError(f"unknown CT window {window!r} (known: {', '.join(CT_WINDOWS)})")
        level, width = CT_WINDOWS[window]
    else:
        level, width = (float(w) for w in window)
    if width <= 0:
        raise OptionError("CT window width must be positive")
    lo = level - width / 2.0
    return np.clip((np.asarray(volume, dtype=np.float32) - lo) / width, 0.0, 1.0).astype(np.float32)


def normalize_unit(volume: np.ndarray, max_value: float | None = None) -> np.ndarray:
    v = np.asarray(volume, dtype=np.float32)
    if max_value and max_value > 0:
        return np.clip(v / max_value, 0.0, 1.0).astype(np.float32)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        raise StudyError("the image is constant; nothing to normalise")
    return ((v - lo) / (hi - lo)).astype(np.float32)


def default_method(modality: str) -> str:
    return {"CT": "ct-window:brain", "OT": "unit"}.get(modality, "mri-percentile")


def normalize(volume: np.ndarray, method: str, max_value: float | None = None) -> np.ndarray:
    """Apply a named method ("mri-percentile", "ct-window:brain|soft-tissue|bone", "unit") to an array."""
    if method == "mri-percentile":
        return normalize_mri(volume)
    if method.startswith("ct-window"):
        _, _, name = method.partition(":")
        return normalize_ct(volume, name or "brain")
    if method == "unit":
        return normalize_unit(volume, max_value)
    raise OptionError(f"unknown normalisation {method!r} (mri-percentile, ct-window:NAME, unit)")


def normalize_study(study, method: str | None = None) -> np.ndarray:
    """The study's data normalised to [0, 1] (RGB studies keep their 3 channels)."""
    m = method or default_method(study.modality)
    return normalize(study.data, m, study.meta.get("bit_depth_max"))
