"""Members' raw maps (MG and base) of the dae+ae-l1 ensemble on validation volumes, saved for a post-processing grid."""
import sys, time, numpy as np, torch
torch.set_num_threads(2)
from app.core.ensemble import load_ensemble
from app.data.splits import load_volumes
data, first, skip, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
vols = load_volumes(data, "val")
det, card = load_ensemble("models/dae+ae-l1.json", "cpu")
imgs = np.asarray(vols.images)[skip:skip + first]; masks = np.asarray(vols.masks, bool)[skip:skip + first]
r, z = masks.shape[:2]
flat = imgs.reshape(r * z, *imgs.shape[2:])
res = {}
for mode in ("mg", "base"):
    t = time.time()
    runs = det.raw_runs(flat, 1.0, base_only=mode == "base")
    for m, run in zip(det.members, runs):
        res[f"{mode}_{m.name}"] = run.d.reshape(r, z, *run.d.shape[1:]).astype(np.float32)
    res["fg"] = runs[0].foreground.reshape(r, z, *runs[0].foreground.shape[1:])
    print(mode, time.time() - t, flush=True)
np.savez_compressed(out, masks=masks, **res)
print("saved", out, r, z)
