"""What is saved beside a study's mask -- shared by ``detect``, ``batch`` and the viewer's Save mask (one writer,
no copies; the detection itself is ``app.batch.task.detect_volume`` for ``detect`` and ``batch`` and the same
``prepare_study`` + ``Detector.run`` in the viewer):

:func:`write_beside`: beside a written mask ``OUT`` (``X.nii.gz``, ``X.nrrd``, ``X.dcm``), the brain mask used
(``X_brainmask.nii.gz`` / ``X_brainmask.nrrd``, same grid and format as the mask; a DICOM SEG mask gets a NIfTI
brain mask, the SEG writer holds one abnormality segment) and the preprocessing record ``X_preprocessing.json``
(:func:`preprocessing_record`: the warnings, whether brain extraction and N4 ran, their method and seconds, the
model, eps and tau). Both written atomically.

It lives in ``app.viewer`` because the viewer, ``batch`` and the CLI all build on it (``batch`` and the CLI sit
above the viewer).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from app.atomic import atomic_write_text
from app.data.pipeline import PreparedStudy

RECORD_VERSION = 1
BRAIN_SUFFIX = "_brainmask"
RECORD_SUFFIX = "_preprocessing.json"


# --------------------------------------------------------------------------------------- beside the mask


def _stem_and_ext(path: Path) -> tuple[str, str]:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)], ext
    return path.stem, path.suffix


def beside_paths(mask_path) -> tuple[Path, Path]:
    """(brain mask, preprocessing record) paths beside ``mask_path``."""
    p = Path(mask_path)
    stem, ext = _stem_and_ext(p)
    brain_ext = ".nii.gz" if ext in (".dcm", "") else ext
    return p.with_name(f"{stem}{BRAIN_SUFFIX}{brain_ext}"), p.with_name(f"{stem}{RECORD_SUFFIX}")


def all_warnings(study, domain_warnings: list[str]) -> list[str]:
    """What the user must read about this study and model, in the order the banner, stderr and records show it:
    the reading warnings, then the domain warnings (:attr:`PreparedStudy.warnings`)."""
    return [*(getattr(study, "warnings", None) or []), *domain_warnings]


def preprocessing_record(study, prep: PreparedStudy, model: dict, eps: float, tau: float, **extra) -> dict:
    """The JSON-able record of what a study went through (see the module docstring). ``model``: name and card
    facts; ``extra``: more top-level facts (timings, base_only, ...)."""
    rec = prep.preprocessing
    skull = rec.get("skull_strip") or {}
    bias = rec.get("bias")
    status = skull.get("status")
    return {
        "version": RECORD_VERSION,
        "study": str(getattr(study, "source", "")),
        "warnings": all_warnings(study, prep.warnings),
        "brain_extraction": {
            "ran": status in ("atlas", "failed") and "seconds" in skull,
            "status": status,
            "ok": prep.brain is not None,
            "method": skull.get("detail") if status == "atlas" else None,
            "detail": skull.get("detail"),
            "seconds": skull.get("seconds"),
            "volume_ml": skull.get("volume_ml"),
        },
        "bias_correction": {
            "ran": bias is not None,
            "method": (bias or {}).get("method"),
            "seconds": (bias or {}).get("seconds"),
        },
        "normalization": rec.get("normalization"),
        "contrast": rec.get("contrast"),
        "model_domain": rec.get("model_domain"),
        "model": model,
        "eps": float(eps),
        "tau": float(tau),
        **extra,
        "preprocessing": rec,
    }


def _finite(obj):
    """NaN/inf as null (the record is strict JSON)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_beside(study, prep: PreparedStudy, mask_path, record: dict) -> tuple[Path | None, Path]:
    """Write the brain mask (when one was found) and ``record`` beside ``mask_path``; returns their paths
    (brain None when the study had none: not brain MRI, extraction failed or skipped). A stale brain mask of an
    earlier run at the same place is removed, so what lies beside a mask always belongs to it."""
    from app.io import save_mask

    brain_path, json_path = beside_paths(mask_path)
    written = None
    if prep.brain is not None:
        written = save_mask(study, prep.brain, brain_path)
    else:
        brain_path.unlink(missing_ok=True)
    record = {**record, "mask": Path(mask_path).name, "brain_mask": written.name if written else None}
    atomic_write_text(json_path, json.dumps(_finite(record), indent=1, default=_json_default, allow_nan=False) + "\n")
    return written, json_path
