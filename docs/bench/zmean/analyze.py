import sys
sys.path.insert(0, "/work/main")
import numpy as np
from scipy import ndimage
from app.core.maps import detection_mask
from app.core.metrics import dice, dice_table, fp_per_normal_slice, paired_difference

masks = np.load("/work/runs/zsmooth/masks.npy").astype(bool)
print("masks", masks.shape)
TAUS = np.round(np.arange(0, 0.4, 0.005), 3)
MINC = 30
def variants(d, fg):
    yield "none", d
    for k in (3, 5):
        m = ndimage.uniform_filter1d(d, k, axis=1, mode="nearest") * fg
        yield f"zmean{k}", m
    m = ndimage.median_filter(d, size=(1, 3, 1, 1), mode="nearest") * fg
    yield "zmed3", m
for mode in sys.argv[1:] or ["mg", "base"]:
    z = np.load(f"/work/runs/zsmooth/{mode}.npz")
    d, fg = z["d"], z["fg"]
    ref = None
    for name, m in variants(d, fg):
        tab = dice_table(list(m[:16]), list(masks[:16]), TAUS, MINC)
        tau = float(TAUS[int(np.argmax(tab))])
        fresh = [dice(detection_mask(m[i], tau, MINC), masks[i]) for i in range(16, 32)]
        fp = np.mean([fp_per_normal_slice(detection_mask(m[i], tau, MINC), masks[i]) for i in range(16, 32)])
        if ref is None:
            ref = fresh
        pd = paired_difference(ref, fresh)
        print(f"{mode} {name}: tau {tau:.3f} choosing {100*tab.max():.1f} fresh {100*np.mean(fresh):.1f} "
              f"diff {100*pd['mean']:+.1f} [{100*pd['ci95'][0]:+.1f}, {100*pd['ci95'][1]:+.1f}] fp {fp:.1f}", flush=True)
