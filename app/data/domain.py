"""Is a study inside the model's training domain? Qt-free checks that turn every mismatch into one readable
warning line (the CLI prints ``warning: ...``; the viewer shows them in a banner; outputs record them).

The model's domain comes from its card's optional ``domain`` object::

    "domain": {"modality": "MR", "contrast": "T1", "contrast_enhanced": false, "max_slice_mm": 3.0,
               "skull_stripped": true}

A card without one: a model trained on the offline brain benchmark (``training.data_meta.name ==
"brain-proxy"``) is skull-stripped non-enhanced T1 MRI with voxels of at most 3 mm (its training grids were
1-3 mm); otherwise only the modality is known (from the card's normalisation).

Checks (:func:`check_domain`):

- modality (CT given to an MR model and the reverse);
- MR contrast: from DICOM tags (SeriesDescription, ProtocolName, SequenceName, and TR/TE/TI), from the file
  name (``*_t2.nii.gz``, ``*flair*``, BraTS' ``t1ce``), and from the image itself where the brain was found by
  atlas registration (:func:`contrast_from_tissues`: in T1 white matter > grey matter > CSF);
- contrast enhancement (ContrastBolusAgent, "+C", "gad", "post" in the description);
- slices much thicker than training (largest voxel side or SliceThickness > 1.5 x the domain's maximum);
- skull present but brain extraction failed, or skipped (``--no-skull-strip``) for a skull-stripped model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: slices up to this factor thicker than the training maximum pass silently
THICK_FACTOR = 1.5


@dataclass(frozen=True)
class ModelDomain:
    modality: str | None = "MR"  # "MR", "CT", "OT" or None (unknown)
    contrast: str | None = None  # "T1", "T2", "FLAIR", "PD", ... or None (unknown)
    contrast_enhanced: bool | None = None
    max_slice_mm: float | None = None
    skull_stripped: bool | None = None  # the model was trained on skull-stripped brains

    def describe(self) -> str:
        parts = [p for p in (self.modality, self.contrast) if p]
        if self.contrast_enhanced is False:
            parts.append("non-enhanced")
        if self.skull_stripped:
            parts.append("skull-stripped")
        if self.max_slice_mm:
            parts.append(f"voxels <= {self.max_slice_mm:g} mm")
        return " ".join(parts) or "unknown"

    def as_dict(self) -> dict:
        return {
            "modality": self.modality,
            "contrast": self.contrast,
            "contrast_enhanced": self.contrast_enhanced,
            "max_slice_mm": self.max_slice_mm,
            "skull_stripped": self.skull_stripped,
        }


BRAIN_PROXY = ModelDomain("MR", "T1", False, 3.0, True)


def domain_from_card(card: dict | None) -> ModelDomain:
    """The card's ``domain`` object, else what its training data say (see the module docstring)."""
    card = card or {}
    d = card.get("domain")
    if isinstance(d, dict):
        try:
            mx = d.get("max_slice_mm")
            return ModelDomain(
                modality=(str(d["modality"]).upper() if d.get("modality") else None),
                contrast=(str(d["contrast"]).upper() if d.get("contrast") else None),
                contrast_enhanced=(bool(d["contrast_enhanced"]) if d.get("contrast_enhanced") is not None else None),
                max_slice_mm=(float(mx) if mx is not None else None),
                skull_stripped=(bool(d["skull_stripped"]) if d.get("skull_stripped") is not None else None),
            )
        except (TypeError, ValueError):
            pass  # a damaged domain object: fall back to what the training data say
    training = card.get("training") or {}
    meta = training.get("data_meta") or {}
    if meta.get("name") == "brain-proxy":
        return BRAIN_PROXY
    norm = str((card.get("config") or {}).get("normalization") or meta.get("normalization") or "")
    if norm.startswith("ct-window"):
        return ModelDomain("CT")
    if norm == "unit":
        return ModelDomain("OT")
    if norm == "mri-percentile":
        return ModelDomain("MR")
    return ModelDomain(None)


# ------------------------------------------------------------------------------------------- contrast

_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"flair|\bdark[ _-]?fluid|\btirm\b", "FLAIR"),
    (r"(^|[^a-z0-9])(dwi|adc|trace|diff(usion)?|dti)([^a-z]|$)", "DWI"),
    (r"(^|[^a-z0-9])(swi|swan|t2\*|t2star|gre[ _-]?t2)([^a-z]|$)", "T2*"),
    (r"(^|[^a-z0-9])(pd|proton[ _-]?density|pdw)([^a-z]|$)", "PD"),
    (r"(^|[^a-z0-9])t2([^a-z0-9*]|w|$)|t2[ _-]?(tse|fse|space|cube|blade)", "T2"),
    (r"(^|[^a-z0-9])t1|mprage|mp-rage|mp2rage|spgr|bravo|\btfl\b|fspgr|\bvibe\b|\bflash\b", "T1"),
)
_ENHANCED = re.compile(r"(\+ ?c\b|\bgad|\bgd\b|\bpost\b|contrast|\bce\b|t1ce|t1c\b|t1gd|\bkm\b|\bmit km\b|\+km)")


def contrast_from_text(*texts: str) -> str | None:
    """A sequence name from free text (series description, protocol, file name), or None."""
    for text in texts:
        t = (text or "").lower()
        if not t:
            continue
        for pattern, name in _NAME_RULES:
            if re.search(pattern, t):
                return name
    return None


def contrast_from_timing(tr: float | None, te: float | None, ti: float | None) -> str | None:
    """The usual weighting from TR/TE/TI in ms (None when the tags do not settle it)."""
    if ti is not None and ti > 1500 and (tr is None or tr > 4000):
        return "FLAIR"
    if te is not None and te > 60 and (tr is None or tr > 1500):
        return "T2"
    if te is not None and te < 20 and tr is not None and tr < 1000:
        return "T1"
    if ti is not None and 600 <= ti <= 1300 and te is not None and te < 10:  # MPRAGE-like
        return "T1"
    if te is not None and te < 30 and tr is not None and tr > 2000 and ti is None:
        return "PD"
    return None


def contrast_from_tissues(volume: np.ndarray, template: np.ndarray, brain: np.ndarray) -> tuple[str | None, dict]:
    """The contrast from the study's intensities in the atlas's tissue classes (``template``: the registered T1
    template on the study grid; its brightest 30 % of brain voxels are white matter, the middle grey matter, the
    darkest 15 % CSF). T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR-like (also PD): GM > WM > CSF."""
    b = np.asarray(brain, bool) & np.isfinite(template)
    if b.sum() < 500:
        return None, {}
    t = template[b]
    v = np.asarray(volume, np.float32)[b]
    lo, mid_lo, mid_hi, hi = np.percentile(t, [15, 35, 60, 70])
    wm = float(np.median(v[t >= hi]))
    gm = float(np.median(v[(t >= mid_lo) & (t < mid_hi)]))
    csf = float(np.median(v[t <= lo]))
    scale = max(abs(wm), abs(gm), abs(csf), 1e-6)
    facts = {"wm": round(wm / scale, 3), "gm": round(gm / scale, 3), "csf": round(csf / scale, 3)}
    if csf > gm and csf > wm:
        return "T2", facts
    if gm > wm * 1.03 and csf < gm:
        return "FLAIR", facts  # grey brighter than white, CSF dark: FLAIR (or PD)
    if wm > gm > csf:
        return "T1", facts
    return None, facts


@dataclass
class Contrast:
    name: str | None
    enhanced: bool | None
    evidence: str

    def as_dict(self) -> dict:
        return {"name": self.name, "enhanced": self.enhanced, "evidence": self.evidence}


def study_contrast(study, tissues: str | None = None, tissue_facts: dict | None = None) -> Contrast:
    """The study's MR contrast and enhancement, with where it came from (tags, file name, image)."""
    meta = study.meta or {}
    texts = [str(meta.get(k, "")) for k in ("SeriesDescription", "ProtocolName", "SequenceName")]
    name, evidence = contrast_from_text(*texts), "DICOM series description/protocol"
    if name is None:
        name = contrast_from_timing(meta.get("RepetitionTime"), meta.get("EchoTime"), meta.get("InversionTime"))
        evidence = "DICOM TR/TE/TI"
    if name is None and meta.get("format") != "DICOM":
        name = contrast_from_text(Path(str(study.source)).name.split(".")[0])
        evidence = "file name"
    if name is None and tissues:
        name, evidence = tissues, f"image intensities in atlas tissue classes {tissue_facts or {}}"
    elif name is not None and tissues and tissues != name:
        evidence += f" (the image intensities look {tissues})"
    if name is None:
        evidence = "unknown"
    agent = str(meta.get("ContrastBolusAgent", "") or "").strip()
    text = " ".join(texts + ([Path(str(study.source)).name] if meta.get("format") != "DICOM" else [])).lower()
    enhanced: bool | None = None
    if agent and agent.lower() not in ("none", "no", "0"):
        enhanced = True
        evidence += f"; ContrastBolusAgent '{agent}'"
    elif _ENHANCED.search(text):
        enhanced = True
        evidence += "; 'contrast' in the description"
    elif meta.get("format") == "DICOM":
        enhanced = False
    return Contrast(name, enhanced, evidence)


# --------------------------------------------------------------------------------------------- checks


def check_domain(study, domain: ModelDomain, record: dict | None = None) -> list[str]:
    """Warnings (one line each) for every way ``study`` lies outside ``domain``. ``record``: what preprocessing
    did (:attr:`app.data.pipeline.ModelInput.preprocessing`), for the skull and contrast checks."""
    record = record or {}
    out: list[str] = []
    mod = str(study.modality or "").upper()
    if domain.modality and mod and mod != domain.modality and not (mod == "OT" and domain.modality == "MR"):
        what = {"CT": "a CT study", "MR": "an MR study", "OT": "a picture"}.get(mod, f"a {mod} study")
        out.append(
            f"{what} given to a model trained on {domain.modality} ({domain.describe()}): results are meaningless"
        )
        return out  # contrast and skull checks make no sense across modalities
    if mod == "MR" and study.channels == 1:
        c = record.get("contrast") or {}
        name, enhanced = c.get("name"), c.get("enhanced")
        if domain.contrast and name and name != domain.contrast:
            out.append(
                f"{name} contrast ({c.get('evidence', '')}) but the model was trained on {domain.contrast}: "
                "outside its domain, expect false detections"
            )
        if domain.contrast_enhanced is False and enhanced:
            out.append(
                f"contrast-enhanced study ({c.get('evidence', '')}) but the model was trained on non-enhanced "
                f"{domain.contrast or 'images'}: enhancing vessels and dura may be flagged"
            )
        skull = record.get("skull_strip") or {}
        status = skull.get("status")
        if domain.skull_stripped and status == "failed":
            out.append(
                f"skull present but brain extraction failed ({skull.get('detail', '')}): the model sees the whole head"
            )
        elif domain.skull_stripped and status == "skipped" and skull.get("skull_present"):
            out.append(
                "skull present and brain extraction skipped (--no-skull-strip): the model was trained on "
                "skull-stripped brains and the scalp will be flagged"
            )
    if domain.max_slice_mm and study.shape[2] > 1:
        thick = max(study.spacing)
        st = (study.meta or {}).get("SliceThickness")
        if isinstance(st, int | float) and st > thick:
            thick = float(st)
        if thick > THICK_FACTOR * domain.max_slice_mm:
            out.append(
                f"slices {thick:.1f} mm thick, much thicker than training (<= {domain.max_slice_mm:g} mm): small "
                "lesions are lost and detections are smeared"
            )
    return out
