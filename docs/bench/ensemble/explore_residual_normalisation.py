"""Residual normalisation by what normal tissue's D is expected to be, given local image features (exploration on
validation volumes only). fit on volumes A, choose tau on A, judge on B."""
import sys
sys.path.insert(0, "/work/main")
import numpy as np
from scipy import ndimage as ndi
from sklearn.metrics import average_precision_score
from app.core.detector import PostProcessing
from app.core.maps import z_mean, z_window_slices
from app.core.metrics import dice, paired_difference
f = np.load(sys.argv[1]); mode = sys.argv[2] if len(sys.argv) > 2 else "mg"
d = f[mode].astype(np.float32); fg = f["fg"]; x = f["x"].astype(np.float32); masks = f["masks"]
slice_mm = float(f["slice_mm"]); R = d.shape[0]
post = PostProcessing(median_size=3, erode_px=4, min_component_px=30, z_mm=18.0)
k = post.z_slices(slice_mm)
TAUS = np.round(np.arange(0.0, 6.0, 0.0025), 4)
xs = ndi.gaussian_filter(x, (0, 0, 1, 1))
grad = np.hypot(ndi.sobel(xs, -1), ndi.sobel(xs, -2)) / 8
feats = {"int": x, "grad": grad}
def bins(v, edges): return np.clip(np.digitize(v, edges) - 1, 0, len(edges) - 2)
def fit(name, A, nb=16, stat="median"):
    v = feats[name]
    sel = fg[A] & ~masks[A]
    edges = np.quantile(v[A][sel], np.linspace(0, 1, nb + 1)); edges[0] -= 1e-6; edges[-1] += 1e-6
    b = bins(v[A][sel], edges); dd = d[A][sel]
    table = np.array([np.median(dd[b == i]) if stat == "median" else np.quantile(dd[b == i], 0.9) for i in range(nb)])
    return edges, table
def normalise(name, edges, table, how):
    e = table[bins(feats[name], edges)]
    return (d / (e + 0.01)) if how == "ratio" else np.maximum(d - e, 0)
def zwin(m):
    return np.stack([z_mean(m[r], k, fg[r]) for r in range(R)])
def best_tau(mz, A, taus):
    # coarse tau search: mean volume dice over A
    best = (-1, 0)
    for t in taus:
        dc = np.mean([dice(post.mask(mz[r], t), masks[r]) for r in A])
        if dc > best[0]: best = (dc, t)
    return best
def report(label, m, A, B, ref=None):
    mz = zwin(m)
    hi = np.quantile(mz[fg], 0.9995); taus = np.linspace(0, hi, 60)
    dA, t = best_tau(mz, A, taus)
    dB = [dice(post.mask(mz[r], t), masks[r]) for r in B]
    ap = average_precision_score(masks[B][fg[B]], mz[B][fg[B]])
    s = f"{label:28s} A {100*dA:5.1f}  B {100*np.mean(dB):5.1f}  AP_B {100*ap:5.1f}"
    if ref is not None:
        pd = paired_difference(ref, dB); s += f"  B-ref {100*pd['mean']:+.1f} [{100*pd['ci95'][0]:+.1f}, {100*pd['ci95'][1]:+.1f}]"
    print(s, flush=True); return dB
A, B = np.arange(0, R // 2), np.arange(R // 2, R)
for (A, B) in ((A, B), (B, A)):
    print("fit/choose on", A[0], "..", A[-1])
    ref = report("card (D)", d, A, B)
    for name in ("int", "grad"):
        for how in ("ratio", "sub"):
            for stat in ("median", "q90"):
                e, tab = fit(name, A, stat=stat)
                report(f"{name} {how} {stat}", normalise(name, e, tab, how), A, B, ref)
