"""s-average vs D-average (validation choosing volumes, split halves)."""
import sys
sys.path.insert(0, "/work/main")
import numpy as np
from sklearn.metrics import average_precision_score
from app.core.detector import PostProcessing
from app.core.maps import foreground_mask, postprocess, z_mean
from app.core.metrics import dice, paired_difference
names = sys.argv[1].split(",")
post = PostProcessing(median_size=3, erode_px=4, min_component_px=30, z_mm=18.0)
F0 = np.load("/work/runs/rnorm/raw-dae.npz"); x = F0["x"].astype(np.float32); masks = F0["masks"]; R = x.shape[0]
fg = np.stack([foreground_mask(x[r]) for r in range(R)])
fge = np.stack([postprocess(np.ones_like(x[r]), fg[r], 0, 4) > 0 for r in range(R)])
S = {n: np.load(f"/work/runs/rnorm/s-{n}.npz")["s"].astype(np.float32) for n in names}
k = post.z_slices(2.0)
def evaluate(m, A, B, ref=None, label=""):
    m = np.stack([postprocess(m[r], fg[r], 3, 4) for r in range(R)])
    mz = np.stack([z_mean(m[r], k, fg[r]) for r in range(R)])
    taus = np.quantile(mz[fge], np.linspace(0.9, 0.9999, 80))
    best = max(((np.mean([dice(post.mask(mz[r], t), masks[r]) for r in A]), t) for t in taus))
    dB = [dice(post.mask(mz[r], best[1]), masks[r]) for r in B]
    ap = average_precision_score(masks[B][fge[B]], mz[B][fge[B]])
    s = f"{label:28s} A {100*best[0]:5.1f}  B {100*np.mean(dB):5.1f}  AP_B {100*ap:5.1f}"
    if ref is not None:
        pd = paired_difference(ref, dB); s += f"  B-dae {100*pd['mean']:+.1f} [{100*pd['ci95'][0]:+.1f}, {100*pd['ci95'][1]:+.1f}]"
    print(s, flush=True); return dB
half = R // 2
for A, B in ((np.arange(half), np.arange(half, R)), (np.arange(half, R), np.arange(half))):
    print("choose on", A[0], "..", A[-1])
    ref = evaluate(np.abs(x - S["dae"]), A, B, label="dae |x-s|")
    for n in names[1:]:
        evaluate(np.abs(x - 0.5 * (S["dae"] + S[n])), A, B, ref, f"|x - mean(s dae, s {n})|")
        evaluate(0.5 * (np.abs(x - S["dae"]) + np.abs(x - S[n])), A, B, ref, f"mean(D dae, D {n}) unscaled")
