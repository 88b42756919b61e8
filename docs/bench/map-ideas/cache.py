"""Cache the raw maps of the members of `dae+ae-l1` (the default until 2026-12-06) on a split's volumes: python cache.py DATA SPLIT OUT.npz [skip] [n]"""
import numpy as np

from common import split_args

det, vols, sl, out = split_args()
imgs = np.asarray(vols.images)[sl]
masks = np.asarray(vols.masks, bool)[sl]
r, z = masks.shape[:2]
flat = imgs.reshape(r * z, *imgs.shape[2:])
res = {"x": flat[:, 0].astype(np.float32), "masks": masks.reshape(r * z, *masks.shape[2:]), "r": r, "z": z,
       "zidx": np.asarray(vols.z), "slice_mm": vols.slice_mm}
for mode, f in (("mg", 1.0), ("base", 0.0)):
    runs = det.raw_runs(flat, f, base_only=(f == 0))
    for m, run in zip(det.members, runs):
        res[f"d_{m.name}_{mode}"] = run.d.astype(np.float32)
        res[f"s_{m.name}_{mode}"] = run.s[:, 0].astype(np.float32)
        res[f"scale_{m.name}_{mode}"] = m.scale(f == 0)
    res["fg"] = runs[0].foreground
    print(mode, "done", flush=True)
np.savez_compressed(out, **res)
