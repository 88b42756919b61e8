"""Scanner study -> what the model was trained on: brain extraction and bias correction for brain MRI, decided
in one place for ``detect``, the viewer and the benchmarks (:func:`app.data.pipeline.prepare_study` calls
:func:`preprocess_study`).

For a single-channel 3D MR study:

1. already skull-stripped (:func:`app.data.brain.looks_skull_stripped`)? Then it is left exactly as it is
   (no N4 either: the training brains went in as they were); the brain is its non-zero part.
2. otherwise (skull on), unless ``skull_strip=False``: N4 bias-field correction inside the head, then the atlas
   registration finds the brain and the study's own T1 intensities refine its edge
   (:func:`app.data.brain.extract_brain`, :func:`app.data.brain.refine_brain_mask`); everything outside it is set
   to zero, as in the skull-stripped training images. A failed extraction leaves the whole head in (and the domain
   check warns).

CT, pictures and RGB studies pass through unchanged. What was done is returned as a JSON-able record
(:attr:`Preprocessed.record`) that outputs keep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

SKULL_STRIP_MODES = ("auto", "off")


@dataclass
class Preprocessed:
    volume: np.ndarray  # the study's data after correction / masking (raw units, canonical grid)
    brain: np.ndarray | None  # bool brain mask on the canonical grid (None: not brain MRI, or no mask found)
    record: dict = field(default_factory=dict)


#: below these a volume cannot be registered to the atlas (SimpleITK's smoothing needs >= 4 voxels per axis at the
#: coarsest level) and cannot hold a head
MIN_EXTRACTION_VOXELS = 8
MIN_EXTRACTION_MM = 40.0


def is_brain_mri(study) -> bool:
    return str(study.modality).upper() == "MR" and study.channels == 1 and min(study.shape) > 1


def preprocess_study(study, skull_strip: bool = True, bias: bool = True, deformable: bool = False) -> Preprocessed:
    """See the module docstring. ``bias``: N4 on skull-on studies (skull-stripped ones are never changed)."""
    from app.data.brain import extract_brain, looks_skull_stripped, n4_correct

    t0 = time.perf_counter()
    data = study.data
    if not is_brain_mri(study):
        why = "not a single-channel 3D MR study"
        return Preprocessed(data, None, {"skull_strip": {"status": "not-applicable", "detail": why}, "bias": None})
    stripped, why = looks_skull_stripped(data, study.spacing)
    if stripped:
        brain = data > float(data.min())
        rec = {
            "skull_strip": {"status": "already-stripped", "detail": why, "skull_present": False},
            "bias": None,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        return Preprocessed(data, brain, rec)
    if not skull_strip:
        rec = {"skull_strip": {"status": "skipped", "detail": why, "skull_present": True}, "bias": None}
        return Preprocessed(data, None, rec)
    extent = np.asarray(study.shape[:3]) * np.asarray(study.spacing[:3])
    if min(study.shape[:3]) < MIN_EXTRACTION_VOXELS or extent.min() < MIN_EXTRACTION_MM:
        # too small a volume for the atlas registration (its 8 mm level needs several voxels per axis): say so
        # instead of failing inside SimpleITK; the domain check then warns that extraction failed
        detail = (
            f"volume {tuple(int(n) for n in study.shape[:3])} voxels, {tuple(round(float(e)) for e in extent)} mm: "
            f"too small for atlas brain extraction (needs >= {MIN_EXTRACTION_VOXELS} voxels and "
            f">= {MIN_EXTRACTION_MM:.0f} mm along every axis)"
        )
        rec = {"skull_strip": {"status": "failed", "detail": detail, "skull_present": True}, "bias": None}
        return Preprocessed(data, None, rec)
    vol, bias_rec = n4_correct(data, study.affine) if bias else (data, None)
    ext = extract_brain(vol, study.affine, deformable=deformable)
    skull = {**ext.record(), "skull_present": True, "why_not_stripped": why}
    rec = {"skull_strip": skull, "bias": bias_rec}
    if ext.ok:
        out = np.where(ext.mask, vol - float(vol.min()), 0.0).astype(np.float32)
        brain = ext.mask
    else:
        out, brain = vol, None
    rec["seconds"] = round(time.perf_counter() - t0, 2)
    return Preprocessed(out, brain, rec)
