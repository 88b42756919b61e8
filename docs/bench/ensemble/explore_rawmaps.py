"""Raw (pre-post-processing) +MG and base maps of a zoo model at its card's whole-volume eps, for R validation
volumes (exploration: an ensemble of models' maps). Usage: rawmaps.py DATA R MODEL OUT [SKIP]"""
import sys, time
sys.path.insert(0, "/work/main")
import numpy as np, torch
from app.core.detector import Detector
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model
torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
data, R, name, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
skip = int(sys.argv[5]) if len(sys.argv) > 5 else 0
model, card = load_checkpoint(resolve_model(name), "cpu")
det = Detector.from_card(model, card, "cpu", batch_size=16)
ch = card_choices(card)
vols = load_volumes(data, "val")
imgs = np.asarray(vols.images[skip:skip + R]); masks = np.asarray(vols.masks[skip:skip + R])
r, z = imgs.shape[:2]
flat = imgs.reshape(r * z, *imgs.shape[2:])
t0 = time.time(); res = {}
for mode in ("mg", "base"):
    o = det.run(flat, ch["eps"], base_only=(mode == "base"), raw=True)
    res[mode] = o.d.reshape(r, z, *o.d.shape[1:]).astype(np.float16)
    print(name, mode, round(time.time() - t0, 1), "eps", ch["eps"], flush=True)
np.savez_compressed(out, **res, masks=masks, x=imgs[:, :, 0].astype(np.float16))
