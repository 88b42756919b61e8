"""The screening map less its mirror image across each study's fitted mid-sagittal plane (the rule: rule.md beside
this file), beside the shipped map, scored as every screening candidate (docs/bench/screen-members/members.py's
outlined() and score_outlined()). Run from the repository root:

    python docs/bench/screen-mirror/mirror.py CACHE.pkl STUDIES_DIR CHOICES.json [--fixed]

CACHE from docs/bench/z-scales/cache.py over STUDIES_DIR (a `bench triage` study set). Without --fixed (validation)
each map's threshold and cut are set here and written to CHOICES.json; with it (a test run) they are read from it."""

import json
import pickle
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-members"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "screen-sign"))
from members import candidate_rows, matched_choices  # noqa: E402  (outline, cut, lesions found, AUROC, paired difference)
from sign import TAU_BASE, study_grid  # noqa: E402  (the shipped screening map on the study grid)

CANDIDATES = [(a, r) for a in (0.5, 1.0) for r in (1, 2)]
SAMPLE = 40000


def lr_axis(affine) -> int:
    codes = nib.aff2axcodes(affine)
    return next(i for i, c in enumerate(codes) if c in "LR")


def fit_plane(img: np.ndarray, brain: np.ndarray, seed: int = 0):
    """(a, b, c) of the reflection x' = 2 (a + b (y - yc) + c (z - zc)) - x, axis 0 the left-right one, that makes
    the (lightly smoothed) image most like its mirror image over a random sample of brain voxels; and the mean
    squared difference before (the mask's centre, no tilt) and after."""
    im = ndimage.gaussian_filter(img.astype(np.float32), 1.0)
    idx = np.argwhere(brain)
    rng = np.random.default_rng(seed)
    pick = idx[rng.choice(len(idx), min(SAMPLE, len(idx)), replace=False)].T.astype(np.float64)
    x, y, z = pick
    v = ndimage.map_coordinates(im, pick, order=1)
    yc, zc = idx[:, 1].mean(), idx[:, 2].mean()

    def cost(p):
        xr = 2 * (p[0] + p[1] * (y - yc) + p[2] * (z - zc)) - x
        w = ndimage.map_coordinates(im, [xr, y, z], order=1, mode="constant", cval=0.0)
        return float(np.mean((w - v) ** 2))

    p0 = np.array([idx[:, 0].mean(), 0.0, 0.0])
    res = minimize(cost, p0, method="Powell", options={"xtol": 1e-3, "ftol": 1e-6})
    return res.x, yc, zc, cost(p0), float(res.fun)


def mirrored(d: np.ndarray, plane, radius: int) -> np.ndarray:
    """D grey-dilated by a (2 radius + 1)^3 box, sampled at each voxel's reflection (axis 0 left-right)."""
    (a, b, c), yc, zc = plane[0], plane[1], plane[2]
    dil = ndimage.grey_dilation(d, size=(2 * radius + 1,) * 3)
    x, y, z = np.indices(d.shape, dtype=np.float32)
    xr = 2 * (a + b * (y - yc) + c * (z - zc)) - x
    return ndimage.map_coordinates(dil, [xr, y, z], order=1, mode="constant", cval=0.0)


def main():
    cache, studies, choices_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    fixed = "--fixed" in sys.argv[4:]
    data = pickle.load(cache.open("rb"))
    maps, brains, planes = {}, {}, []
    for sid, s in data.items():
        t = time.time()
        dv, brain = study_grid(s, s["d"])
        img_nii = nib.load(studies / f"{sid}.nii.gz")
        ax = lr_axis(img_nii.affine)
        img = np.moveaxis(np.asanyarray(img_nii.dataobj).astype(np.float32), ax, 0)
        b0, d0 = np.moveaxis(brain, ax, 0), np.moveaxis(dv, ax, 0)
        p, yc, zc, before, after = fit_plane(img, b0)
        zooms = [float(img_nii.header.get_zooms()[i]) for i in [ax] + [k for k in range(3) if k != ax]]
        tilt = [float(np.degrees(np.arctan(p[k] * zooms[0] / zooms[k]))) for k in (1, 2)]
        planes.append({"id": sid, "a": float(p[0]), "tilt_deg": tilt, "msd_before": before, "msd_after": after})
        maps[sid, "shipped"] = dv
        for a, r in CANDIDATES:
            m = np.maximum(0.0, d0 - a * mirrored(d0, (p, yc, zc), r))
            maps[sid, f"mirror-{a:g}-{r}"] = np.moveaxis(np.where(b0, m, 0.0), 0, ax).astype(np.float32)
        brains[sid] = brain
        print(f"{sid}: plane x = {p[0]:.1f} vox, tilts {tilt[0]:+.1f} / {tilt[1]:+.1f} deg, mirror msd "
              f"{before:.5f} -> {after:.5f} ({time.time() - t:.1f} s)", file=sys.stderr, flush=True)  # fmt: skip
    names = ["shipped"] + [f"mirror-{a:g}-{r}" for a, r in CANDIDATES]
    normals = [k for k, s in data.items() if s["ids"] is None]

    def normal_voxels(name):
        return np.concatenate([maps[k, name][brains[k]] for k in normals])

    if fixed:
        choices = json.loads(choices_path.read_text())
    else:
        choices = matched_choices(names, normal_voxels, TAU_BASE)
    tilts = np.median(np.abs([pl["tilt_deg"] for pl in planes]), axis=0)
    msd = [np.median([pl[k] for pl in planes]) for k in ("msd_before", "msd_after")]
    print(f"{len(data)} studies ({len(normals)} normal); fitted planes: tilt median |{tilts[0]:.1f}| / "
          f"|{tilts[1]:.1f}| deg, mirror msd median {msd[0]:.5f} -> {msd[1]:.5f}; exceedance of tau_base by the "
          f"shipped map on normal brain voxels {choices['exceedance']:.2e}")  # fmt: skip

    def studies_of(name):
        return [(maps[k, name], data[k]["geom"], data[k]["ids"], data[k]["vox_ml"]) for k in data]

    candidate_rows(names, studies_of, choices["threshold"], choices, fixed)
    if not fixed:
        choices["planes"] = planes
        choices_path.write_text(json.dumps(choices, indent=1) + "\n")


if __name__ == "__main__":
    main()
