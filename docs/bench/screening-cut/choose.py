"""The screening detection of ``batch``, chosen on the whole-head validation studies (rule.md beside this file):
findings outlined where the base map's D exceeds ``f x tau_base`` (in-plane components of at least ``min_px`` model
pixels, the card's rule), reported only when their highest D reaches the cut at which the normal validation studies
keep at most one false finding each. For every (f, min_px) of the grid: the cut, the lesions found with the
reported findings (found as ``bench triage`` counts: more than a tenth of a lesion's voxels flagged by findings that
lie at least a tenth in lesions), and the false findings per normal study before and after the cut. Reads a
``bench triage --maps`` run's saved base maps; the same script scores the test studies with ``--fixed``.

    python docs/bench/screening-cut/choose.py RUN_DIR STUDIES_DIR TAU_BASE [--fixed F MIN_PX CUT]
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from app.bench.triage import (  # noqa: E402
    LESION_IDS,
    auroc_interval,
    found_by_bin,
    lesion_cuts,
    rate_floor,
)
from app.core.findings import label_findings, voxel_volume_mm3  # noqa: E402
from app.core.maps import study_detection_mask  # noqa: E402
from app.data.pipeline import prepare_study  # noqa: E402
from app.io import load_study  # noqa: E402

FACTORS = (1.2, 1.0, 0.85, 0.7, 0.55)
MIN_PX = (0, 5, 10, 20, 30, 45)
RATE = 1.0  # false findings per normal study left after the cut


def load(run: Path, studies: Path) -> list[dict]:
    out = []
    for r in csv.DictReader((studies / "truth.csv").open()):
        res = json.loads((run / r["id"] / "result.json").read_text())
        if res.get("status") != "ok":
            continue
        d = np.asanyarray(nib.load(run / r["id"] / "difference.nii.gz").dataobj).astype(np.float32)
        study = load_study(studies / f"{r['id']}.nii.gz")
        geom = prepare_study(study, 128, 1, "mri-percentile", skull_strip=False).geometry
        ab = bool(int(r["abnormal"]))
        ids = np.asanyarray(nib.load(studies / f"{r['id']}{LESION_IDS}").dataobj).astype(np.int64) if ab else None
        out.append({"id": r["id"], "d": d, "geom": geom, "ids": ids, "vox_ml": voxel_volume_mm3(study.affine) / 1e3})
    return out


def candidates(s: dict, tau: float, min_px: int):
    """Labels and peak D of the findings outlined at tau (as batch outlines them)."""
    lab, n = label_findings(study_detection_mask(s["d"], tau, s["geom"], min_px))
    from scipy import ndimage

    peak = np.full(n + 1, -np.inf)
    if n:
        peak[1:] = ndimage.maximum(s["d"], lab, index=np.arange(1, n + 1))
    return lab, n, peak


def score(data: list[dict], tau: float, min_px: int, cut: float | None):
    """(cut used, lesions found per bin, false findings per normal study before and after the cut, AUROC of the
    order [95 %]: each study's score is the highest D of its outlined findings, 0 without any)."""
    per = [(s, *candidates(s, tau, min_px)) for s in data]
    y = np.array([s["ids"] is not None for s, *_ in per], dtype=int)
    sc = np.array([float(p[1:].max()) if n else 0.0 for s, _, n, p in per])
    from sklearn.metrics import roc_auc_score

    auc = (float(roc_auc_score(y, sc)), *auroc_interval(y, sc))
    normal_peaks = np.sort(np.concatenate([p[1:] for s, _, _, p in per if s["ids"] is None]))[::-1]
    n_normal = sum(1 for s in data if s["ids"] is None)
    if cut is None:  # findings above it leave at most RATE false ones per normal study
        cut = rate_floor(normal_peaks, RATE, n_normal)
    lesions = [
        lc for s, lab, n, pk in per if s["ids"] is not None for lc in lesion_cuts(lab, n, pk, s["ids"], s["vox_ml"])
    ]
    found = found_by_bin(lesions, cut)
    fp_all = normal_peaks.size / n_normal
    fp_cut = float((normal_peaks > cut).sum()) / n_normal
    return cut, found, fp_all, fp_cut, auc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("studies", type=Path)
    ap.add_argument("tau_base", type=float)
    ap.add_argument("--fixed", nargs=3, type=float, metavar=("F", "MIN_PX", "CUT"))
    a = ap.parse_args()
    data = load(a.run, a.studies)
    grid = [(a.fixed[0], int(a.fixed[1]), a.fixed[2])] if a.fixed else [(f, m, None) for f in FACTORS for m in MIN_PX]
    if a.fixed:  # the current detection beside it: tau_base, the card's 30 px, every finding reported
        grid.insert(0, (1.0, 30, -np.inf))
    print("| tau / tau_base | min component (px) | cut (peak D) | lesions found <1 / 1-5 / >=5 ml | total "
          "| false findings per normal study, all / reported | AUROC of the order [95 %] |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for f, m, cut in grid:
        c, found, fp_all, fp_cut, auc = score(data, f * a.tau_base, m, cut)
        cells = " / ".join(f"{x} of {n}" for x, n in found.values())
        total = sum(x for x, _ in found.values())
        roc = f"{auc[0]:.3f} [{auc[1]:.2f}, {auc[2]:.2f}]"
        print(f"| {f:g} | {m} | {c:.4f} | {cells} | {total} | {fp_all:.1f} / {fp_cut:.1f} | {roc} |", flush=True)


if __name__ == "__main__":
    main()
