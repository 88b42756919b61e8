"""Test-time transforms for the dae member: python tta.py DATA SPLIT OUT.npz [skip] [n]"""
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
sl = slice(skip, None if n is None else skip + n)
imgs = np.asarray(vols.images)[sl]
r, z = imgs.shape[:2]
flat = imgs.reshape(r * z, *imgs.shape[2:])
T = {"flip": (lambda a: a[..., ::-1], lambda a: a[..., ::-1]),
     "shift8": (lambda a: np.roll(a, (8, 8), (-2, -1)), lambda a: np.roll(a, (-8, -8), (-2, -1))),
     "flipshift8": (lambda a: np.roll(a[..., ::-1], (8, 8), (-2, -1)), lambda a: np.roll(a, (-8, -8), (-2, -1))[..., ::-1])}
res = {}
for m in det.members:
    for name, (fw, bw) in T.items():
        xt = np.ascontiguousarray(fw(flat))
        for mode, f in (("mg", 1.0), ("base", 0.0)):
            run = m.detector.run(xt, m.eps * f, base_only=(f == 0), raw=True)
            res[f"d_{m.name}_{mode}_{name}"] = np.ascontiguousarray(bw(run.d)).astype(np.float32)
        print(m.name, name, flush=True)
np.savez_compressed(out, **res)
