"""Findings: the connected components of a detection mask, measured, and the study-level anomaly score.

A *finding* is one 3D connected component of the mask ``D > tau`` (26-connectivity: voxels touching by a face,
an edge or a corner belong together, as in ITK-SNAP's and FSLeyes' cluster tools). For each finding:

- ``volume_ml``: voxel count x voxel volume (mm^3) / 1000;
- ``centre_voxel``: the centroid (canonical voxel indices, RAS order) and ``centre_mm`` the same point in world
  (RAS) millimetres through the study's affine; ``centre_slice``: the axial slice holding the centroid, clamped
  into the finding's own slice range;
- ``extent_mm``: the bounding box's size along X, Y, Z in mm; ``slices``: first and last axial slice (inclusive);
- ``mean_d`` / ``max_d``: the difference map over the finding's voxels;
- ``peak_slice``: the axial slice where the finding's cross-section is largest.

**Study-level anomaly score** (:func:`study_score`): the peak D of the detection, i.e. the highest difference
value inside any finding (the mask after the card's post-processing and component rule, as ``detect`` writes
it), 0 when nothing is flagged. It reads as "how strongly the most abnormal flagged region deviates from the
pseudo-normal". The slice where the score peaks is that finding's ``peak_slice`` (its largest cross-section);
without findings it is the slice with the highest D. Until this version the score was the volume of the largest
finding (``largest_ml``, still recorded); ``bench triage`` showed false-positive findings of normal studies
(2-12 ml with the default model +MG) as large as the lesions' detected parts, and the peak D was chosen instead
on the validation split only (docs/batch.md). Three alternatives are reported beside it (``largest_ml``;
``flagged_ml``: all flagged voxels; ``d_q999``: the 99.9th percentile of D over the foreground).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

#: 26-connectivity in 3D
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass
class Finding:
    label: int  # 1-based, in order of decreasing volume
    voxels: int
    volume_ml: float
    centre_voxel: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    centre_slice: int
    extent_mm: tuple[float, float, float]
    slices: tuple[int, int]
    peak_slice: int
    mean_d: float
    max_d: float

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("centre_voxel", "centre_mm", "extent_mm", "slices"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        return cls(
            label=int(d["label"]),
            voxels=int(d["voxels"]),
            volume_ml=float(d["volume_ml"]),
            centre_voxel=tuple(float(v) for v in d["centre_voxel"]),
            centre_mm=tuple(float(v) for v in d["centre_mm"]),
            centre_slice=int(d["centre_slice"]),
            extent_mm=tuple(float(v) for v in d["extent_mm"]),
            slices=(int(d["slices"][0]), int(d["slices"][1])),
            peak_slice=int(d["peak_slice"]),
            mean_d=float(d["mean_d"]),
            max_d=float(d["max_d"]),
        )


def voxel_volume_mm3(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def label_findings(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, n) of a 3D bool mask with 26-connectivity; labels are renumbered 1..n by decreasing size (ties:
    the component whose first voxel comes first in C order)."""
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"findings need a 3D mask, got shape {m.shape}")
    lab, n = ndimage.label(m, structure=STRUCTURE)
    if n == 0:
        return lab.astype(np.int32), 0
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # ndimage labels in C order of first voxel, so ties stay stable
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, n + 1, dtype=np.int32)
    return remap[lab], int(n)


def find_findings(
    mask: np.ndarray,
    d: np.ndarray | None,
    affine: np.ndarray,
    labels: np.ndarray | None = None,
) -> list[Finding]:
    """All findings of ``mask`` (canonical X, Y, Z) with ``d`` the difference map on the same grid (or None) and
    ``affine`` the canonical voxel -> RAS mm transform; largest first."""
    mask = np.asarray(mask, dtype=bool)
    if d is not None and np.shape(d) != mask.shape:
        raise ValueError(f"difference map {np.shape(d)} and mask {mask.shape} differ")
    lab, n = (labels, int(labels.max()) if labels.size else 0) if labels is not None else label_findings(mask)
    if n == 0:
        return []
    affine = np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    vox_ml = voxel_volume_mm3(affine) / 1000.0
    idx = np.arange(1, n + 1)
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    centres = np.atleast_2d(np.array(ndimage.center_of_mass(np.ones_like(lab, np.float32), lab, idx)))
    boxes = ndimage.find_objects(lab, max_label=n)
    dvals = np.asarray(d, dtype=np.float64) if d is not None else None
    out = []
    for i in range(n):
        box = boxes[i]
        sub = lab[box] == i + 1
        z0, z1 = box[2].start, box[2].stop - 1
        area = sub.sum(axis=(0, 1))
        peak = z0 + int(np.argmax(area))
        c = centres[i]
        cz = int(min(max(int(round(c[2])), z0), z1))
        c_mm = (affine @ np.array([c[0], c[1], c[2], 1.0]))[:3]
        ext = tuple(float((b.stop - b.start) * s) for b, s in zip(box, spacing, strict=True))
        if dvals is not None:
            vals = dvals[box][sub]
            mean_d, max_d = float(vals.mean()), float(vals.max())
        else:
            mean_d = max_d = float("nan")
        out.append(
            Finding(
                label=i + 1,
                voxels=int(counts[i]),
                volume_ml=float(counts[i] * vox_ml),
                centre_voxel=(float(c[0]), float(c[1]), float(c[2])),
                centre_mm=(float(c_mm[0]), float(c_mm[1]), float(c_mm[2])),
                centre_slice=cz,
                extent_mm=ext,  # type: ignore[arg-type]
                slices=(int(z0), int(z1)),
                peak_slice=peak,
                mean_d=mean_d,
                max_d=max_d,
            )
        )
    return out


@dataclass
class StudyScore:
    score: float  # peak D: the highest D inside any finding (0 without findings)
    peak_slice: int  # axial slice where it peaks
    largest_ml: float  # ml of the largest finding (the score before the triage measurement)
    flagged_ml: float
    n_findings: int
    d_q999: float  # 99.9th percentile of D over the foreground (0 without foreground)

    def to_dict(self) -> dict:
        return asdict(self)


SCORE_DEFINITION = (
    "peak D of the detection: the highest D inside any finding (26-connected component of the detection, D > tau "
    "with the card's post-processing and component rule); peak slice = the axial slice where that finding's "
    "cross-section is largest (without findings: 0, and the slice with the highest D)"
)


def study_score(
    findings: list[Finding], mask: np.ndarray, d: np.ndarray, affine: np.ndarray, foreground: np.ndarray | None = None
) -> StudyScore:
    """The study-level score (module docstring) from the findings of ``mask`` and the difference map ``d``."""
    d = np.asarray(d, dtype=np.float32)
    vox_ml = voxel_volume_mm3(affine) / 1000.0
    fg = np.asarray(foreground, dtype=bool) if foreground is not None else d > 0
    q = float(np.quantile(d[fg], 0.999)) if fg.any() else 0.0
    if findings:
        top = max(findings, key=lambda f: (f.max_d if np.isfinite(f.max_d) else -np.inf, f.voxels))
        score = float(top.max_d) if np.isfinite(top.max_d) else 0.0
        peak = top.peak_slice
    else:
        score = 0.0
        per_slice = d.reshape(-1, d.shape[2]).max(axis=0) if d.size else np.zeros(1)
        peak = int(np.argmax(per_slice))
    return StudyScore(
        score=float(score),
        peak_slice=int(peak),
        largest_ml=float(findings[0].volume_ml) if findings else 0.0,
        flagged_ml=float(np.count_nonzero(mask) * vox_ml),
        n_findings=len(findings),
        d_q999=q,
    )


def outline(labels_slice: np.ndarray, label: int) -> np.ndarray:
    """The one-voxel-wide boundary of finding ``label`` on a 2D label slice (for drawing it outlined)."""
    m = np.asarray(labels_slice) == label
    if not m.any():
        return m
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)
