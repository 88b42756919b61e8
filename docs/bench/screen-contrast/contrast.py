"""A finding's confidence for the screening: its peak D (shipped) against its contrast with the D around it, on the
whole-head validation studies only (the rule: rule.md beside this file). The findings are the shipped screening's
(18 mm z window, outline 0.7 x tau_base, 30 px); only how they are ranked changes. Run from the repository root:
python docs/bench/screen-contrast/contrast.py CACHE.pkl [CUTS.json] (CACHE from docs/bench/z-scales/cache.py).
With CUTS.json (written on validation) the cuts are fixed, as a test run uses them; without, each candidate's cut is
the one that leaves one false finding per normal study and they are written to cuts.json beside the cache."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from sklearn.metrics import roc_auc_score  # noqa: E402

from app.bench.triage import auroc_interval, found_by_bin, lesion_cuts, rate_floor  # noqa: E402
from app.core.findings import label_findings  # noqa: E402
from app.core.maps import study_detection_mask, z_mean, z_window_slices  # noqa: E402
from app.data.pipeline import to_study_grid  # noqa: E402

OUTLINE = 0.10724489033222198  # the card's screening tau (0.7 x tau_base)
MIN_PX = 30
CANDIDATES = ("peak", "shell-6", "shell-12", "ratio-12", "hp-8", "hp-16")


def ball(radius_mm, spacing):
    r = [int(np.ceil(radius_mm / s)) for s in spacing]
    g = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    return sum((gi * s / radius_mm) ** 2 for gi, s in zip(g, spacing, strict=True)) <= 1.0


def confidences(d, brain, lab, n, spacing):
    """Each candidate's confidence per finding (indexed by label; 0 unused)."""
    out = {c: np.full(n + 1, -np.inf) for c in CANDIDATES}
    if not n:
        return out
    idx = np.arange(1, n + 1)
    peak = np.asarray(ndimage.maximum(d, lab, index=idx))
    out["peak"][1:] = peak
    for s_mm in (8, 16):
        sig = [s_mm / s for s in spacing]
        bl = ndimage.gaussian_filter(np.where(brain, d, 0).astype(np.float64), sig)
        w = ndimage.gaussian_filter(brain.astype(np.float64), sig)
        hp = d - bl / np.maximum(w, 1e-6)
        out[f"hp-{s_mm}"][1:] = ndimage.maximum(hp, lab, index=idx)
    boxes = ndimage.find_objects(lab)
    for r_mm in (6, 12):
        b = ball(r_mm, spacing)
        pad = [k // 2 for k in b.shape]
        for k, box in enumerate(boxes, start=1):
            sl = tuple(
                slice(max(0, x.start - p), min(dim, x.stop + p)) for x, p, dim in zip(box, pad, d.shape, strict=True)
            )
            f = lab[sl] == k
            shell = ndimage.binary_dilation(f, b) & ~f & brain[sl]
            med = float(np.median(d[sl][shell])) if shell.any() else 0.0
            out[f"shell-{r_mm}"][k] = peak[k - 1] - med
            if r_mm == 12:
                out["ratio-12"][k] = peak[k - 1] / max(med, 1e-6)
    return out


def main():
    data = pickle.load(open(sys.argv[1], "rb"))
    fixed = json.loads(Path(sys.argv[2]).read_text()) if len(sys.argv) > 2 else None
    per = []
    for s in data.values():
        dm = z_mean(s["d"], z_window_slices(18, s["geom"].spacing[2]), s["fg"], "nearest")
        dv = to_study_grid(dm, s["geom"], "map")
        brain = s["brain"] if s["brain"] is not None else np.ones(dv.shape, bool)
        dv = np.where(brain, dv, 0).astype(np.float32)
        lab, n = label_findings(study_detection_mask(dv, OUTLINE, s["geom"], MIN_PX))
        per.append((s, lab, n, confidences(dv, brain, lab, n, s["geom"].spacing)))
    normals = [p for p in per if p[0]["ids"] is None]
    n_normal = len(normals)
    y = np.array([p[0]["ids"] is not None for p in per], int)
    cuts = {}
    print(f"{len(per)} studies ({n_normal} normal), {sum(p[2] for p in per)} findings")
    print("| confidence | cut | found <1 / 1-5 / >=5 ml | total | false findings per normal study | AUROC [95 %] |")
    print("|---|---|---|---|---|---|")
    for c in CANDIDATES:
        normal_conf = np.sort(np.concatenate([p[3][c][1:] for p in normals]))[::-1]
        cut = fixed[c] if fixed else rate_floor(normal_conf, 1.0, n_normal)
        cuts[c] = cut
        sc = np.array([float(p[3][c][1:].max()) if p[2] else -1e9 for p in per])
        auc = roc_auc_score(y, sc)
        lo, hi = auroc_interval(y, sc)
        lesions = [
            lc
            for s, lab, n, conf in per
            if s["ids"] is not None
            for lc in lesion_cuts(lab, n, conf[c], s["ids"], s["vox_ml"])
        ]
        found = found_by_bin(lesions, cut)
        tot = sum(x for x, _ in found.values())
        cells = " / ".join(f"{x} of {k}" for x, k in found.values())
        fp = float((normal_conf > cut).sum()) / n_normal
        if c == "peak":  # the ceiling no ranking passes: every finding kept
            ceiling = found_by_bin(lesions)
            print(
                f"| (every finding kept) | | {' / '.join(f'{x} of {k}' for x, k in ceiling.values())} "
                f"| {sum(x for x, _ in ceiling.values())} | {normal_conf.size / n_normal:.2f} | |"
            )
        print(f"| {c} | {cut:.4f} | {cells} | {tot} | {fp:.2f} | {auc:.3f} [{lo:.2f}, {hi:.2f}] |", flush=True)
    if not fixed:
        Path(sys.argv[1]).with_name("cuts.json").write_text(json.dumps(cuts, indent=1))


if __name__ == "__main__":
    main()
