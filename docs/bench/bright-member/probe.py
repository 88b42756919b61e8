"""A brightness member beside the default's three? Looked at on the sixteen choosing volumes only (seeds 1000-1015):
the members' raw maps of `dae+dae-cover-base+ae-l1` as it applies them (dae and ae-l1 + MG at their cards' eps,
dae-cover's base map), each divided by its median on normal tissue (in the dae's unit, as explore_cover.py), with
and without a map of how much brighter than the volume's brain the input is, max(0, x - q) for q the volume's
q-quantile of brain intensity, divided by its own normal-tissue median and weighted w. Pooled AP and the mean
whole-volume Dice at the best single tau (docs/bench/map-ideas/common.py).

    python probe.py DATA CACHE.npz     # the maps are cached in CACHE.npz on the first run (about 6 min on 2 cores)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "map-ideas"))
sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import Cache, evaluator  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

torch.set_num_threads(2)
data, cache_path = sys.argv[1:3]
det, _, card = load_detector(resolve_model("dae+dae-cover-base+ae-l1"), "cpu", batch_size=16)
if not Path(cache_path).is_file():
    vols = load_volumes(data, "val").head(16)
    imgs = np.asarray(vols.images)
    masks = np.asarray(vols.masks, bool)
    r, z = masks.shape[:2]
    flat = imgs.reshape(r * z, *imgs.shape[2:])
    res = {"x": flat[:, 0].astype(np.float32), "masks": masks.reshape(r * z, *masks.shape[2:]), "r": r, "z": z,
           "zidx": np.asarray(vols.z), "slice_mm": vols.slice_mm}
    runs = det.raw_runs(flat, 1.0, base_only=False)  # each member as the card applies it (dae-cover: eps 0)
    for m, run in zip(det.members, runs, strict=True):
        res[f"d_{m.name}_mg"] = run.d.astype(np.float32)
        res[f"scale_{m.name}_mg"] = m.scale(False)
        print(m.name, m.eps, flush=True)
    res["fg"] = runs[0].foreground
    np.savez_compressed(cache_path, **res)
cache = Cache(cache_path)
ev = evaluator(cache, det.post)
normal = ev.normal
names = [m.name for m in det.members]
maps = [cache.member(n, "mg") for n in names]
unit = np.median(maps[0][normal])
members = sum(m / np.median(m[normal]) * unit for m in maps)
print("| map | pooled AP % | mean volume Dice % | per volume |\n|---|---|---|---|")
ev("the default's three members", members)
x = cache.x.reshape(cache.r, cache.z, *cache.x.shape[1:])
fgv = cache.fg.reshape(x.shape)
for q in (0.9, 0.99):
    lev = np.array([np.quantile(x[i][fgv[i]], q) for i in range(cache.r)])[:, None, None, None]
    bright = np.maximum(0.0, x - lev).reshape(cache.x.shape) * cache.fg
    med = np.median(bright[normal & (bright > 0)])
    b = bright / med * unit
    ev(f"brightness above the volume's q{q:g} alone", b + 1e-6 * members)
    for w in (0.25, 0.5, 1.0):
        ev(f"three members + {w:g} x brightness above q{q:g}", members + w * b)
