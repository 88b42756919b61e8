"""Several z windows at once for the screening detection, on the whole-head validation studies only (nothing built
on it). Each window's D (0 = none, 6, 10, 14, 18 mm; in slices per study by its slice spacing) is divided by its own
threshold: the value its normal-study brain voxels exceed as often as the card's 18 mm D exceeds tau_base. The
combined map is the largest of these ratios; findings are outlined at F x 1 and reported above the cut that leaves
one false finding per normal study, counted as `bench triage` counts them. The first row is the shipped detection
(18 mm alone, outline 0.7, 30 px). python docs/bench/z-scales/scales.py CACHE.pkl (from cache.py)"""

import pickle
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sklearn.metrics import roc_auc_score

from app.bench.triage import found_by_bin, lesion_cuts, rate_floor
from app.core.findings import label_findings
from app.core.maps import study_detection_mask, z_mean, z_window_slices
from app.data.pipeline import to_study_grid

TAU_BASE = 0.10724489033222198 / 0.7
data = pickle.load(open(sys.argv[1], "rb"))
SCALES = (0, 6, 10, 14, 18)  # mm; 0: no window
vol = {}  # (id, w) -> study-grid D restricted to brain
for sid, s in data.items():
    for w in SCALES:
        dm = z_mean(s["d"], z_window_slices(w, s["geom"].spacing[2]) if w else 1, s["fg"], "nearest")
        dv = to_study_grid(dm, s["geom"], "map")
        if s["brain"] is not None:
            dv = np.where(s["brain"], dv, 0).astype(np.float32)
        vol[sid, w] = dv
normals = [k for k, s in data.items() if s["ids"] is None]
# the exceedance level of D_9 > tau_base on normal brain voxels
nb = np.concatenate([vol[k, 18][data[k]["brain"]] for k in normals])
p = float((nb > TAU_BASE).mean())
t = {}
for w in SCALES:
    v = np.concatenate([vol[k, w][data[k]["brain"]] for k in normals])
    t[w] = float(np.quantile(v, 1 - p))
print(
    f"exceedance of the 18 mm D > tau_base on normal brain voxels: {p:.2e}; per-scale thresholds:",
    ", ".join(f"{w}: {t[w]:.4f}" for w in SCALES),
    flush=True,
)


def combined(sid, ws, norm):
    return np.max([vol[sid, w] / (t[w] if norm else 1.0) for w in ws], axis=0)


def score(ws, f, min_px, norm=True, rate=1.0):
    per = []
    for sid, s in data.items():
        m = combined(sid, ws, norm)
        lab, n = label_findings(study_detection_mask(m, f if norm else f * TAU_BASE, s["geom"], min_px))
        peak = np.full(n + 1, -np.inf)
        if n:
            peak[1:] = ndimage.maximum(m, lab, index=np.arange(1, n + 1))
        per.append((s, lab, n, peak))
    n_normal = len(normals)
    normal_peaks = np.sort(np.concatenate([pk[1:] for s, _, _, pk in per if s["ids"] is None]))[::-1]
    cut = rate_floor(normal_peaks, rate, n_normal)
    y = np.array([s["ids"] is not None for s, *_ in per], int)
    sc = np.array([float(pk[1:].max()) if n else 0.0 for s, _, n, pk in per])
    auc = roc_auc_score(y, sc)
    lesions = [
        lc for s, lab, n, pk in per if s["ids"] is not None for lc in lesion_cuts(lab, n, pk, s["ids"], s["vox_ml"])
    ]
    found = found_by_bin(lesions, cut)
    fp_cut = float((normal_peaks > cut).sum()) / n_normal
    tot = sum(x for x, _ in found.values())
    cells = " / ".join(f"{x} of {n}" for x, n in found.values())
    fp_all = normal_peaks.size / n_normal
    head = f"| {','.join(map(str, ws))} | {f:g} | {min_px} | {cut:.3f}"
    return f"{head} | {cells} | {tot} | {fp_all:.1f} / {fp_cut:.1f} | {auc:.3f} |"


print(
    "| windows (mm) | outline (x scale threshold) | min px | cut | found <1 / 1-5 / >=5 ml | total "
    "| FP/normal all / cut | AUROC |"
)
print("|---|---|---|---|---|---|---|---|")
print(score((18,), 0.7, 30), flush=True)
for ws in [(10,), (14,), (6, 18), (10, 18), (6, 10, 18), (0, 6, 18), (0, 6, 10, 14, 18), (10, 14, 18)]:
    for f in (0.7, 1.0):
        for mp in (10, 30):
            print(score(ws, f, mp), flush=True)
