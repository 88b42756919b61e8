"""The viewer's findings list and saved batch results, Qt-free.

:class:`FindingsList` holds the connected findings of the current study (from a whole-volume run, computed with
:mod:`app.core.findings`, or read from a batch ``result.json``) with their label volume, the selected finding,
and the outline of the selected finding on any axial slice. :class:`SavedResult` is a batch study's saved outcome
(mask, optionally the difference and pseudo-normal maps) read back onto the study's canonical grid, so the viewer
can show it without running the model again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.findings import Finding, find_findings, label_findings, outline, suspicion
from app.errors import StudyError


class FindingsList:
    """Findings of one study, most suspicious first (the highest D inside each), and the selection; ``labels`` is
    the (X, Y, Z) label volume (0 = background), each finding's ``label`` its value there."""

    def __init__(self, findings: list[Finding], labels: np.ndarray, source: str = ""):
        self.findings = sorted(findings, key=suspicion, reverse=True)  # the study's score is the first one's
        self.labels = labels
        self.source = source  # "volume run" or "result.json"
        self.selected: int | None = None  # index into findings

    @classmethod
    def from_volume(
        cls, d: np.ndarray, tau: float, affine: np.ndarray, source: str = "volume run", mask: np.ndarray | None = None
    ) -> FindingsList:
        """The findings of a volume result: of ``mask`` when given (the detection as drawn: the card's component
        rule, or a saved batch mask), else of D > tau."""
        mask = np.asarray(d) > tau if mask is None else np.asarray(mask, dtype=bool)
        labels, _ = label_findings(mask)
        return cls(find_findings(mask, d, affine, labels=labels), labels, source)

    @classmethod
    def from_saved(cls, result: dict, mask: np.ndarray, d: np.ndarray | None, affine: np.ndarray) -> FindingsList:
        """The findings a batch wrote (result.json), with labels recomputed from the saved mask: the labelling is
        deterministic (ordered by size), so label i is the i-th listed finding. Without a listed findings array
        they are measured from the mask. A screening detection's cut (``report_above``) is named in the source."""
        labels, n = label_findings(mask)
        listed = result.get("findings")
        if isinstance(listed, list) and listed and len(listed) <= n:
            try:
                fs = [Finding.from_dict(f) for f in listed]
            except (KeyError, TypeError, ValueError):
                fs = find_findings(mask, d, affine, labels=labels)
        else:
            fs = find_findings(mask, d, affine, labels=labels)
        source = "result.json"
        cut = result.get("report_above")
        if isinstance(cut, int | float):  # a screening detection: only the findings above its cut were written
            outlined = result.get("n_outlined")
            source += f"; reported above peak D {cut:.3g}" + (f", of {outlined} outlined" if outlined else "")
        return cls(fs, labels, source)

    def __len__(self) -> int:
        return len(self.findings)

    def select(self, i: int | None) -> Finding | None:
        if i is None:
            self.selected = None
            return None
        if not 0 <= i < len(self.findings):
            raise IndexError(i)
        self.selected = i
        return self.findings[i]

    def outline_on(self, k: int) -> np.ndarray | None:
        """(X, Y) bool boundary of the selected finding on axial slice ``k``, or None."""
        if self.selected is None or not 0 <= k < self.labels.shape[2]:
            return None
        f = self.findings[self.selected]
        ring = outline(self.labels[:, :, k], f.label)
        return ring if ring.any() else None

    def rows(self) -> list[tuple[str, ...]]:
        """Table rows, in the list's order: #, peak D, volume (ml), extent (mm), mean D, slices."""
        out = []
        for f in self.findings:
            ext = " x ".join(f"{v:.0f}" for v in f.extent_mm)
            md = "-" if f.mean_d != f.mean_d else f"{f.mean_d:.3f}"
            pk = "-" if f.max_d != f.max_d else f"{f.max_d:.3f}"
            out.append((str(f.label), pk, f"{f.volume_ml:.3f}", ext, md, f"{f.slices[0]}-{f.slices[1]}"))
        return out


def outline_into(rgba: np.ndarray | None, ring: np.ndarray | None, colour=(0, 255, 255, 255)) -> np.ndarray | None:
    """Draw ``ring`` (X, Y) into an RGBA overlay (X, Y, 4) in ``colour`` (a copy; cyan by default)."""
    if rgba is None or ring is None:
        return rgba
    out = np.array(rgba, copy=True)
    out[ring] = colour
    return out


@dataclass
class SavedResult:
    """A batch study's saved outcome on the canonical grid of the loaded study."""

    model: str
    eps: float
    tau: float
    mask: np.ndarray  # bool (X, Y, Z)
    d: np.ndarray | None  # float (X, Y, Z), when the batch wrote maps
    s: np.ndarray | None
    peak_slice: int
    findings: FindingsList
    result: dict

    @classmethod
    def load(cls, entry, study) -> SavedResult:
        """``entry``: a :class:`app.viewer.worklist.WorklistEntry`; ``study``: the loaded :class:`app.io.Study`."""
        from app.io import load_mask

        r = entry.result
        if entry.mask_path is None or not entry.mask_path.is_file():
            raise StudyError(f"{entry.id}: the saved mask is missing in {entry.folder}")
        mask = load_mask(entry.mask_path, study)
        outs = r.get("outputs") or {}
        d = _map(entry.folder / outs["difference"], study) if outs.get("difference") else None
        s = _map(entry.folder / outs["pseudo_normal"], study) if outs.get("pseudo_normal") else None
        st = r.get("settings") or {}
        fl = FindingsList.from_saved(r, mask, d, study.affine)
        peak = int(r.get("peak_slice") or 0)
        return cls(
            model=str(st.get("model", "")),
            eps=float(r.get("eps") or 0.0),
            tau=float(r.get("tau") or 0.0),
            mask=mask,
            d=d,
            s=s,
            peak_slice=min(max(peak, 0), mask.shape[2] - 1),
            findings=fl,
            result=r,
        )

    def d_volume(self) -> np.ndarray:
        """The difference map, or where the batch saved only the mask, the mask itself scaled so that D > tau
        reproduces it exactly (1 inside, 0 outside: the display is then the mask, not a map)."""
        if self.d is not None:
            return self.d
        return self.mask.astype(np.float32)

    def slice_result(self, k: int, model_name: str | None = None):
        from app.viewer.compute import SliceResult

        d = self.d_volume()[:, :, k]
        s = self.s[:, :, k] if self.s is not None else np.zeros_like(d)
        return SliceResult(model_name or self.model, int(k), self.eps, s, d, steps=0, seconds=0.0)


def _map(path, study) -> np.ndarray:
    from app.io import load_study_raw_grid

    data, _aff = load_study_raw_grid(path)
    if tuple(data.shape[:3]) != tuple(study.original_shape):
        raise StudyError(f"{path.name}: map grid {tuple(data.shape[:3])} differs from the study's")
    return study.from_original(data).astype(np.float32)
