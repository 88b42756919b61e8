import sys
sys.path.insert(0, "/work/main")
import numpy as np
from scipy import ndimage
from app.core.maps import detection_mask
from app.core.metrics import dice, fp_per_normal_slice, paired_difference
masks = np.load("/work/runs/zsmooth/judge-masks.npy").astype(bool)
for mode, (tau0, k, tau) in (("mg", (0.055, 9, 0.040)), ("base", (0.160, 7, 0.125))):
    z = np.load(f"/work/runs/zsmooth/judge-{mode}.npz")
    d, fg = z["d"], z["fg"]
    m = ndimage.uniform_filter1d(d, k, axis=1, mode="nearest") * fg
    a = [dice(detection_mask(d[i], tau0, 30), masks[i]) for i in range(16)]
    b = [dice(detection_mask(m[i], tau, 30), masks[i]) for i in range(16)]
    fa = np.mean([fp_per_normal_slice(detection_mask(d[i], tau0, 30), masks[i]) for i in range(16)])
    fb = np.mean([fp_per_normal_slice(detection_mask(m[i], tau, 30), masks[i]) for i in range(16)])
    pd = paired_difference(a, b)
    print(f"{mode}: card D {100*np.mean(a):.1f} (fp {fa:.1f}) -> z-mean {k} slices tau {tau}: {100*np.mean(b):.1f} (fp {fb:.1f}); "
          f"diff {100*pd['mean']:+.1f} [{100*pd['ci95'][0]:+.1f}, {100*pd['ci95'][1]:+.1f}] wins {pd['wins']}/{pd['n']}")
