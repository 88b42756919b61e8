"""Where the default ensemble's false positives sit on whole test volumes: by the slice's brain area."""
import numpy as np, torch
torch.set_num_threads(1)
from app.core.ensemble import load_detector
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.core.detector import foreground_area
det, model, card = load_detector("models/dae+ae-l1", "cpu")
tau = card["chosen_volume"]["tau"]
for split in ("val", "test"):
    vols = load_volumes("/work/cache/brain-proxy-v2z", split)
    imgs, masks = np.asarray(vols.images), np.asarray(vols.masks, bool)
    r, z = masks.shape[:2]
    flat = imgs.reshape(r * z, *imgs.shape[2:])
    out = det.run(flat, 1.0)
    fg = out.foreground.reshape(r, z, *out.d.shape[1:])
    maps = across_volumes(det.post, out.d.reshape(fg.shape), fg, vols)
    area = foreground_area(flat, det.post.foreground_threshold).reshape(r, z)
    fp = np.zeros((r, z)); tp = np.zeros((r, z))
    for v in range(r):
        pred = det.post.mask(maps[v], tau)
        fp[v] = (pred & ~masks[v]).reshape(z, -1).sum(1); tp[v] = (pred & masks[v]).reshape(z, -1).sum(1)
    for lo, hi in ((0, 3000), (3000, 5000), (5000, 7000), (7000, 1e9)):
        sel = (area >= lo) & (area < hi)
        print(split, f"{lo}-{hi}", "slices", int(sel.sum()), "FP px/slice %.1f" % (fp[sel].mean() if sel.any() else np.nan),
              "TP px/slice %.1f" % (tp[sel].mean() if sel.any() else np.nan), "lesion px/slice %.1f" % (masks.reshape(r, z, -1).sum(2)[sel].mean() if sel.any() else np.nan))
