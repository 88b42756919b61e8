"""Test-time transforms for the dae member: python tta.py DATA SPLIT OUT.npz [skip] [n]"""
import numpy as np

from common import split_args

det, vols, sl, out = split_args()
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
