import sys
sys.path.insert(0, "/work/main/docs/bench/map-ideas")
import numpy as np
from common import Cache, ensemble, evaluator
det = ensemble()
cache = Cache("/work/runs/norm/val16.npz")
ev = evaluator(cache, det.post)
t = np.load("/work/runs/norm/val16-cover.npz")
normal = ev.normal
for mode in ("mg", "base"):
    dae, ae = cache.member("dae", mode), cache.member("ae-l1", mode)
    cov = t[f"d_{mode}"] / np.median(t[f"d_{mode}"][normal]) * np.median(dae[normal])
    ev(f"{mode} ens", dae + ae)
    ev(f"{mode} dae", dae)
    ev(f"{mode} cover", cov)
    ev(f"{mode} dae+cover", dae + cov)
    ev(f"{mode} dae+cover+ae", dae + cov + ae)
