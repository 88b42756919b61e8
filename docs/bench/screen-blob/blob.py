"""A Hessian blob filter on the screening map, beside the shipped map (the rule: rule.md beside this file), scored as
every screening candidate (docs/bench/screen-members/members.py's outlined() and score_outlined()). Run from the
repository root:

    python docs/bench/screen-blob/blob.py CHOICES.json CACHE.pkl [CACHE.pkl ...] [--fixed]

Each CACHE from docs/bench/z-scales/cache.py over a `bench triage` study set; the sets are scored together. Without
--fixed (validation) each map's threshold and cut are set here and written to CHOICES.json; with it (a test run) they
are read from it."""

import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-members"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-sign"))
from members import candidate_rows, matched_choices  # noqa: E402  (outline, cut, lesions found, AUROC, paired difference)
from sign import TAU_BASE, study_grid  # noqa: E402  (the shipped screening map on the study grid)

from app.data.pipeline import to_study_grid  # noqa: E402

SCALES = (2.0, 3.0, 4.5)  # mm
GAUSS = 3.0  # mm, the control's smoothing
NAMES = ["shipped", "gauss-3"] + [f"blob-{s:g}" for s in SCALES] + ["blob-max"]


def blobness(d: np.ndarray, spacing, s: float, inside: np.ndarray) -> np.ndarray:
    """s^2 max(0, -l3) inside ``inside`` (0 elsewhere): l3 the largest eigenvalue of the Hessian of ``d`` in mm
    (Gaussian derivatives of scale ``s`` mm; ``spacing`` the voxel size in mm per axis)."""
    sig = [s / float(sp) for sp in spacing]
    h = np.empty((int(inside.sum()), 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            dij = ndimage.gaussian_filter(d, sig, order=order, mode="nearest")
            h[:, i, j] = h[:, j, i] = dij[inside] / (float(spacing[i]) * float(spacing[j]))
    l3 = np.linalg.eigvalsh(h)[:, 2]  # ascending: the largest
    out = np.zeros(d.shape, np.float32)
    out[inside] = s * s * np.maximum(0.0, -l3)
    return out


def candidate_maps(s: dict) -> tuple[dict, np.ndarray]:
    """{name: study-grid map inside the brain} of one cached study (blob-max left to the caller) and its brain."""
    shipped, brain = study_grid(s, s["d"])
    d0 = np.where(brain, to_study_grid(s["d"], s["geom"], "map"), 0.0).astype(np.float32)
    sp = s["geom"].spacing
    out = {"shipped": shipped}
    out["gauss-3"] = np.where(brain, ndimage.gaussian_filter(d0, [GAUSS / float(v) for v in sp]), 0).astype(np.float32)
    for sc in SCALES:
        out[f"blob-{sc:g}"] = blobness(d0, sp, sc, brain)
    return out, brain


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    fixed = "--fixed" in sys.argv[1:]
    choices_path, caches = Path(args[0]), [Path(a) for a in args[1:]]
    maps, brains, meta = {}, {}, {}
    for c in caches:
        data = pickle.load(c.open("rb"))
        for sid, s in data.items():
            t = time.time()
            key = f"{c.stem}/{sid}"
            m, brains[key] = candidate_maps(s)
            for n, v in m.items():
                maps[key, n] = v
            meta[key] = (s["geom"], s["ids"], s["vox_ml"])
            print(f"{key}: {time.time() - t:.1f} s", file=sys.stderr, flush=True)
        del data
    keys = list(meta)
    normals = [k for k in keys if meta[k][1] is None]

    def normal_voxels(name):
        return np.concatenate([maps[k, name][brains[k]] for k in normals])

    if fixed:
        choices = json.loads(choices_path.read_text())
    else:
        choices = matched_choices(NAMES[:-1], normal_voxels, TAU_BASE)  # blob-max's below, from the scales'
    thr = choices["threshold"]
    for k in keys:  # blob-max: the largest of the scales, each divided by its own threshold
        maps[k, "blob-max"] = np.max([maps[k, f"blob-{s:g}"] / thr[f"blob-{s:g}"] for s in SCALES], axis=0)
    if not fixed:
        thr["blob-max"] = float(np.quantile(normal_voxels("blob-max"), 1 - choices["exceedance"]))
    print(f"{len(keys)} studies ({len(normals)} normal) from {', '.join(c.name for c in caches)}; exceedance of "
          f"tau_base by the shipped map on normal brain voxels {choices['exceedance']:.2e}")  # fmt: skip
    candidate_rows(NAMES, lambda n: [(maps[k, n], *meta[k]) for k in keys], thr, choices, fixed, ".4g")
    if not fixed:
        choices_path.write_text(json.dumps(choices, indent=1) + "\n")


if __name__ == "__main__":
    main()
