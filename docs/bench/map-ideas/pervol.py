"""Each study's map divided by its own median (or 90th percentile) over its eroded brain, no labels used, so that one
tau fits studies whose residual runs higher or lower: python pervol.py CACHE.npz TTT-NORM.npz"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import numpy as np
from common import Cache, ensemble, evaluator
det = ensemble()
for n, extra in ((None, None), (8 * 23, sys.argv[2])):
    cache = Cache(sys.argv[1], n=n)
    ev = evaluator(cache, det.post)
    normal = ev.normal
    inner = normal | cache.masks  # eroded brain
    def per_volume(d, q=50):
        d = d.copy()
        for r in range(cache.r):
            sl = slice(r * cache.z, (r + 1) * cache.z)
            d[sl] /= np.percentile(d[sl][inner[sl]], q)
        return d
    dae, ae = cache.member("dae", "mg"), cache.member("ae-l1", "mg")
    ev("ens", dae + ae)
    ev("ens per-volume median", per_volume(dae) + per_volume(ae))
    ev("ens per-volume q90", per_volume(dae, 90) + per_volume(ae, 90))
    ev("dae", dae)
    ev("dae per-volume median", per_volume(dae))
    if extra:
        t = np.load(extra)["d_30_mg"]
        ev("ttt-norm dae 30", t)
        ev("ttt-norm dae 30 per-volume median", per_volume(t))
        ev("ttt-norm ens 30 per-volume median", per_volume(t) + per_volume(ae))
