"""Exploration on the 16 choosing validation volumes only: does adding the image's bright excess to the default
ensemble's map help whole-volume Dice? (No judgement; decides whether a later session should build it.)"""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
torch.set_num_threads(2)
from app.core.ensemble import load_detector, normal_median
from app.core.protocol import across_volumes
from app.core.metrics import dice_table
from app.data.splits import load_volumes
from app.nets.zoo import resolve_model
det, _, card = load_detector(resolve_model("dae+ae-l1"), "cpu", batch_size=16)
vols = load_volumes("/work/cache/brain-proxy-v3-val16", "val")
imgs, masks = np.asarray(vols.images), np.asarray(vols.masks, bool)
r, z = masks.shape[:2]
flat = imgs.reshape(r * z, *imgs.shape[2:])
out = det.run(flat, 1.0, raw=True)
unit = det.unit(False)
dn = out.d / unit
fg = out.foreground
x = flat.mean(axis=1)
mI = normal_median(x, fg, masks.reshape(r * z, *masks.shape[2:]), det.post.erode_px)
mD = normal_median(dn, fg, masks.reshape(r * z, *masks.shape[2:]), det.post.erode_px)
print("normal medians: intensity", mI, "ensemble (scaled)", mD)
taus = np.round(np.arange(0.05, 20, 0.05), 3)
for w in (0.0, 1.0, 2.0, 4.0, 8.0, 16.0):
    comb = dn + w * np.clip(x / mI - 1.0, 0, None)
    pp = det.post.apply(comb.astype(np.float32), fg)
    v = across_volumes(det.post, pp.reshape(r, z, *pp.shape[1:]), fg.reshape(r, z, *fg.shape[1:]), vols)
    tab = dice_table(list(v), list(masks), taus, min_component_px=det.post.min_component_px, abnormal_only=False)
    mean = np.asarray(tab).mean(axis=0) if np.ndim(tab) == 2 else np.asarray(tab)
    i = int(np.argmax(mean))
    print(f"w {w:g}: best mean volume Dice {100 * mean[i]:.1f} at tau {taus[i]:g}", flush=True)
