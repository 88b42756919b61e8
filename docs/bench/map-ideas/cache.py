"""Cache the default ensemble members' raw maps on a split's volumes: python cache.py DATA SPLIT OUT.npz [skip] [n]"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
torch.set_num_threads(2)
from app.core.ensemble import load_detector
from app.data.splits import load_volumes
from app.nets.zoo import resolve_model
data, split, out = sys.argv[1:4]
skip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
n = int(sys.argv[5]) if len(sys.argv) > 5 else None
det, _, card = load_detector(resolve_model("dae+ae-l1"), "cpu", batch_size=16)
vols = load_volumes(data, split)
imgs = np.asarray(vols.images)[skip: None if n is None else skip + n]
masks = np.asarray(vols.masks, bool)[skip: None if n is None else skip + n]
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
