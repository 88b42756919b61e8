"""Exploration (validation only): the mean of several models' +MG maps, each scaled by its normal tissue's median
D on the fitting half; the dae's post-processing and z window; tau chosen on one half, judged on the other."""
import sys, itertools
sys.path.insert(0, "/work/main")
import numpy as np
from sklearn.metrics import average_precision_score
from app.core.detector import PostProcessing
from app.core.maps import foreground_mask, postprocess, z_mean
from app.core.metrics import dice, paired_difference
mode = sys.argv[1]; names = sys.argv[2].split(",")
post = PostProcessing(median_size=3, erode_px=4, min_component_px=30, z_mm=18.0)
F = {n: np.load(f"/work/runs/rnorm/raw-{n}.npz") for n in names}
x = F[names[0]]["x"].astype(np.float32); masks = F[names[0]]["masks"]; R, Z = x.shape[:2]
fg = np.stack([foreground_mask(x[r]) for r in range(R)])
k = post.z_slices(2.0)
D = {}
for n in names:
    d = F[n][mode].astype(np.float32)
    D[n] = np.stack([postprocess(d[r], fg[r], 3, 4) for r in range(R)])
fge = np.stack([postprocess(np.ones_like(x[r]), fg[r], 0, 4) > 0 for r in range(R)])
def run(combo, A, B, ref=None):
    scales = {n: np.median(D[n][A][fge[A] & ~masks[A]]) for n in combo}
    m = sum(D[n] / scales[n] for n in combo) / len(combo)
    mz = np.stack([z_mean(m[r], k, fg[r]) for r in range(R)])
    taus = np.quantile(mz[fge], np.linspace(0.9, 0.9999, 80))
    best = max(((np.mean([dice(post.mask(mz[r], t), masks[r]) for r in A]), t) for t in taus))
    dB = [dice(post.mask(mz[r], best[1]), masks[r]) for r in B]
    ap = average_precision_score(masks[B][fge[B]], mz[B][fge[B]])
    s = f"{'+'.join(combo):28s} A {100*best[0]:5.1f}  B {100*np.mean(dB):5.1f}  AP_B {100*ap:5.1f}"
    if ref is not None:
        pd = paired_difference(ref, dB); s += f"  B-dae {100*pd['mean']:+.1f} [{100*pd['ci95'][0]:+.1f}, {100*pd['ci95'][1]:+.1f}]"
    print(s, flush=True); return dB
half = R // 2
for A, B in ((np.arange(half), np.arange(half, R)), (np.arange(half, R), np.arange(half))):
    print(mode, "fit on", A[0], "..", A[-1])
    ref = run(["dae"], A, B)
    for n in names[1:]:
        run([n], A, B, ref)
    for c in range(2, len(names) + 1):
        for combo in itertools.combinations(names, c):
            if "dae" in combo:
                run(list(combo), A, B, ref)
