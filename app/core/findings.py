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

**Study-level anomaly score** (:func:`study_score`): ``peak_d``, the highest D inside any finding (0 without
findings): how strongly the study's most deviating detected tissue differs from its pseudo-normal. It peaks on the
axial slice where that finding's cross-section is largest (``peak_slice``; without findings, the slice with the
highest D). It depends on tau and on the card's component rule, as the detection does. Where only findings whose
highest D exceeds a cut are reported (``batch``'s screening detection, :func:`reported_findings`), the score is
taken over every outlined finding, reported or not: the cut decides what a reader is shown, not the order. History,
each chosen on validation studies only by a rule written before the runs: the volume of the largest finding
(``largest_ml``, 14 studies), the peak D (version 2, 14 studies), the 99.9th percentile of D over the analysed
foreground (``d_q999``, version 3, 48 studies, docs/bench/triage-48/), and the peak D again (version 4, the same 48
studies with the card's z window, docs/bench/triage-z/: AUROC 0.780 against the 99.9th percentile's 0.774 with the
default model + MG, a difference far inside its interval). Every one of them is still recorded beside the score,
with ``flagged_ml`` (all flagged voxels), the median and 90th percentile of D over the foreground, and a model-free
floor (:func:`intensity_deviation_q999`), so a later measurement can compare them on the same runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
    counts = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    # centres of mass from the labelled voxels only (ndimage.center_of_mass sums over the whole volume per axis:
    # 76 ms of a tau step's 120 on the demo, docs/bench/tau-volume/)
    flat = np.flatnonzero(lab)
    which = lab.ravel()[flat]
    centres = np.stack(
        [np.bincount(which, weights=c, minlength=n + 1)[1:] / counts for c in np.unravel_index(flat, lab.shape)],
        axis=1,
    )
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
    score: float  # the study-level score: peak_d since score version 4
    peak_slice: int  # axial slice where it peaks
    largest_ml: float  # ml of the largest finding (the first score)
    flagged_ml: float
    n_findings: int
    d_q999: float  # 99.9th percentile of D over the foreground, 0 without foreground (the score of version 3)
    peak_d: float  # the highest D inside any finding, 0 without findings (the score of versions 2 and 4)
    d_q50: float = 0.0  # median of D over the foreground: the study's typical tissue (for relative scores)
    d_q90: float = 0.0  # 90th percentile of D over the foreground

    def to_dict(self) -> dict:
        return asdict(self)


#: bumped when the study-level score's definition changes (:data:`SCORE_DEFINITION`), so a batch rerun does not rank
#: old scores beside new ones and a triage measurement of another score is not shown as this one's: 4 = the peak D
#: of the detection again (chosen with the card's z window, docs/bench/triage-z/); 3: the 99.9th percentile of D over
#: the foreground; 2: the peak D; 1: the largest finding's volume
SCORE_VERSION = 4
#: the score's short name for table headers (the worklist dock, report.html)
SCORE_LABEL = "score (peak D)"
SCORE_DEFINITION = (
    "peak D of the detection: the highest D inside any finding (26-connected component of the detection, D > tau "
    "with the card's post-processing and component rule); peak slice = the axial slice where that finding's "
    "cross-section is largest (without findings: 0, and the slice with the highest D); where findings are reported "
    "only above a cut on their peak D, over every outlined finding, reported or not"
)


def reported_findings(candidates: list[Finding], labels: np.ndarray, cut: float) -> tuple[np.ndarray, list[Finding]]:
    """The findings a reader is shown when only those whose highest D exceeds ``cut`` are reported (hysteresis: an
    outline at the detection's tau, a report at the higher ``cut``; ``batch``'s screening detection, a card's
    ``screening.report_above``): (their mask, their findings, renumbered largest first). ``candidates`` and
    ``labels`` are every finding of the outlined mask (:func:`find_findings` with those labels). The kept findings
    are the same components, already measured; renumbering them in the candidates' order (largest first, ties in
    labelling order) gives the labels :func:`label_findings` gives their mask, so nothing is labelled or measured
    again."""
    keep = [f for f in candidates if np.isfinite(f.max_d) and f.max_d > cut]
    renumber = np.zeros(len(candidates) + 1, dtype=np.int64)
    renumber[[f.label for f in keep]] = np.arange(1, len(keep) + 1)
    mask = renumber[labels] > 0 if keep else np.zeros(labels.shape, dtype=bool)
    return mask, [replace(f, label=i) for i, f in enumerate(keep, start=1)]


def study_score(
    findings: list[Finding],
    mask: np.ndarray,
    d: np.ndarray,
    affine: np.ndarray,
    foreground: np.ndarray | None = None,
    candidates: list[Finding] | None = None,
) -> StudyScore:
    """The study-level score (module docstring) from the findings of ``mask`` and the difference map ``d``, with
    the quantiles of ``d`` over ``foreground`` (default: where d > 0) recorded beside it. With ``candidates`` (every
    outlined finding, of which ``findings`` are those reported above a cut: :func:`reported_findings`) the score and
    its slice come from the most suspicious candidate, so a study with nothing reported keeps its place in the
    order; volumes and counts stay those of the reported findings."""
    d = np.asarray(d, dtype=np.float32)
    vox_ml = voxel_volume_mm3(affine) / 1000.0
    fg = np.asarray(foreground, dtype=bool) if foreground is not None else d > 0
    q50, q90, q = (float(v) for v in np.quantile(d[fg], [0.5, 0.9, 0.999])) if fg.any() else (0.0, 0.0, 0.0)
    top = most_suspicious(findings if candidates is None else candidates)
    if top is not None and np.isfinite(top.max_d):  # the finding holding the highest D (ties: the larger one)
        peak_d, peak = float(top.max_d), top.peak_slice
    else:
        peak_d = 0.0
        per_slice = d.reshape(-1, d.shape[2]).max(axis=0) if d.size else np.zeros(1)
        peak = int(np.argmax(per_slice))
    return StudyScore(
        score=peak_d,
        peak_slice=int(peak),
        largest_ml=float(findings[0].volume_ml) if findings else 0.0,
        flagged_ml=float(np.count_nonzero(mask) * vox_ml),
        n_findings=len(findings),
        d_q999=q,
        peak_d=peak_d,
        d_q50=q50,
        d_q90=q90,
    )


def suspicion(f: Finding) -> tuple[float, int, int]:
    """Sort key of a finding, larger = more suspicious: the highest D inside it (the confidence by which the
    lesion-level FROC ranks findings, docs/batch.md), then its size, then the smaller label. A finding without D
    (measured on a saved mask alone) ranks by size after every finding with one."""
    return (f.max_d if np.isfinite(f.max_d) else -np.inf, f.voxels, -f.label)


def most_suspicious(findings: list[Finding]) -> Finding | None:
    """The finding with the highest D inside it (ties: the larger one; without D: the largest): the one that
    carries the study's score, first in the viewer's findings list."""
    return max(findings, key=suspicion) if findings else None


def findings_summary(findings: list[Finding]) -> str:
    """One line for a reader: how many findings, and where the most suspicious one is (``detect``'s last line),
    e.g. "3 findings; the most suspicious: 2.41 ml on axial slices 51-60 (centre 55), peak D 0.081"."""
    top = most_suspicious(findings)
    if top is None:
        return "no findings (nothing flagged)"
    n = len(findings)
    peak = f", peak D {top.max_d:.3g}" if np.isfinite(top.max_d) else ""
    return (
        f"{n} finding{'s' if n != 1 else ''}; the most suspicious: {top.volume_ml:.3g} ml on axial slices "
        f"{top.slices[0]}-{top.slices[1]} (centre {top.centre_slice}){peak}"
    )


def intensity_deviation_q999(image: np.ndarray, foreground: np.ndarray) -> float:
    """The model-free floor of a study-level score: the 99.9th percentile over ``foreground`` of
    |x - median(x)| / IQR(x) of the (normalised) study ``image`` -- how far its most unusual voxels lie from its
    typical tissue, bright or dark, in units of its own spread. 0 without foreground or spread."""
    fg = np.asarray(foreground, dtype=bool)
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == fg.ndim + 1:  # channels: their mean, as the foreground is taken
        x = x.mean(axis=-1)
    if not fg.any():
        return 0.0
    v = x[fg]
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    iqr = q75 - q25
    return float(np.quantile(np.abs(v - med), 0.999) / iqr) if iqr > 0 else 0.0


def outline(labels_slice: np.ndarray, label: int) -> np.ndarray:
    """The one-voxel-wide boundary of finding ``label`` on a 2D label slice (for drawing it outlined)."""
    m = np.asarray(labels_slice) == label
    if not m.any():
        return m
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), border_value=0)
