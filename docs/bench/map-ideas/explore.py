"""Each member's map divided by its expected value on normal tissue given local features (the intensity and
gradient of the pseudo-normal s or of the input x, the distance to the brain's edge), the expectation estimated per
feature bin over the normal tissue of the same volumes: python explore.py CACHE.npz"""
import sys

import numpy as np
from scipy import ndimage as ndi

from common import Cache, ensemble, evaluator

det = ensemble()
cache = Cache(sys.argv[1])
evaluate = evaluator(cache, det.post)
normal = evaluate.normal
names = [m.name for m in det.members]


def grad(img):
    sm = ndi.gaussian_filter(img, (0, 1, 1))
    return np.hypot(ndi.sobel(sm, 1), ndi.sobel(sm, 2))


def table_norm(d, feats, edges, fit):
    """d / E[d | binned features], the expectation over ``fit`` pixels, sparse bins shrunk to the global mean."""
    idx = np.zeros(d.shape, np.int64)
    mult = 1
    for f, e in zip(feats, edges):
        idx += np.clip(np.digitize(f, e), 0, len(e)) * mult
        mult *= len(e) + 1
    sums = np.bincount(idx[fit], d[fit], minlength=mult)
    cnt = np.bincount(idx[fit], minlength=mult)
    k = 50.0
    g = (sums + k * d[fit].mean()) / (cnt + k)
    return d / g[idx]


edist = np.stack([ndi.distance_transform_edt(s) for s in cache.fg])
print("| map (+ MG) | pooled AP % | mean volume Dice % | per volume |\n|---|---|---|---|")
ds = {m: cache.member(m, "mg") for m in names}
evaluate("ensemble (shipped)", sum(ds.values()) / len(ds))
for m in names:
    evaluate(f"{m} alone", ds[m])
for what in ("s", "x"):
    normed = {}
    for m in names:
        src = cache.c[f"s_{m}_mg"][: cache.n] if what == "s" else cache.x
        gmag = grad(src)
        ie = np.quantile(src[normal], np.linspace(0, 1, 13)[1:-1])
        ge = np.quantile(gmag[normal], np.linspace(0, 1, 13)[1:-1])
        de = np.array([2, 4, 6, 9, 13])
        normed[m] = {
            "intensity": table_norm(ds[m], [src], [ie], normal),
            "intensity, gradient": table_norm(ds[m], [src, gmag], [ie, ge], normal),
            "intensity, gradient, edge distance": table_norm(ds[m], [src, gmag, edist], [ie, ge, de], normal),
        }
    for key in normed[names[0]]:
        for m in names:
            evaluate(f"{m} / E[D \\| {key} of {what}]", normed[m][key])
        evaluate(f"ensemble / E[D \\| {key} of {what}]", sum(normed[m][key] for m in names) / len(names))
