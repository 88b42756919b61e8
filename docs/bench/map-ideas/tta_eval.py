"""Each member's map averaged over test-time transforms (left-right flip, an 8-pixel shift, both): python
tta_eval.py CACHE.npz TTA.npz (tta.py's output on the same volumes)"""
import sys

import numpy as np

from common import Cache, ensemble, evaluator

det = ensemble()
cache = Cache(sys.argv[1])
evaluate = evaluator(cache, det.post)
t = np.load(sys.argv[2])
names = [m.name for m in det.members]
print("| map | pooled AP % | mean volume Dice % | per volume |\n|---|---|---|---|")
for mode in ("mg", "base"):
    ds = {m: cache.member(m, mode) for m in names}
    tt = {(m, k): t[f"d_{m}_{mode}_{k}"] / cache.c[f"scale_{m}_{mode}"] for m in names
          for k in ("flip", "shift8", "flipshift8")}
    evaluate(f"{mode}: ensemble (shipped)", sum(ds.values()))
    evaluate(f"{mode}: dae", ds["dae"])
    evaluate(f"{mode}: dae + flipped", ds["dae"] + tt["dae", "flip"])
    evaluate(f"{mode}: dae + shifted", ds["dae"] + tt["dae", "shift8"])
    evaluate(f"{mode}: dae, 4 transforms", ds["dae"] + tt["dae", "flip"] + tt["dae", "shift8"] + tt["dae", "flipshift8"])
    evaluate(f"{mode}: ensemble + flipped", sum(ds.values()) + tt["dae", "flip"] + tt["ae-l1", "flip"])
    evaluate(f"{mode}: ensemble, 4 transforms", sum(ds.values()) + sum(tt.values()))
