"""The default's members with the blob-noise dae's map added (each divided by its normal-tissue median, in the dae's
unit): python explore_cover.py CACHE.npz COVER.npz (docs/bench/map-ideas/cache.py and cache_cover.py)"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "map-ideas"))
import numpy as np
from common import Cache, ensemble, evaluator
det = ensemble()
cache = Cache(sys.argv[1])
ev = evaluator(cache, det.post)
t = np.load(sys.argv[2])
normal = ev.normal
for mode in ("mg", "base"):
    dae, ae = cache.member("dae", mode), cache.member("ae-l1", mode)
    cov = t[f"d_{mode}"] / np.median(t[f"d_{mode}"][normal]) * np.median(dae[normal])
    ev(f"{mode} ens", dae + ae)
    ev(f"{mode} dae", dae)
    ev(f"{mode} cover", cov)
    ev(f"{mode} dae+cover", dae + cov)
    ev(f"{mode} dae+cover+ae", dae + cov + ae)
