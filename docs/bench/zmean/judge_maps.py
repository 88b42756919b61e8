import sys, time
sys.path.insert(0, "/work/main")
import numpy as np, torch
from app.core.detector import Detector
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model
torch.set_num_threads(1)
vols = load_volumes("/work/cache/brain-proxy-val48", "val")
print(vols.seeds[32:48])
model, card = load_checkpoint(resolve_model("dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
for mode, eps in (("mg", ch["eps"]), ("base", 0.0)):
    t = time.time()
    D, FG = [], []
    for v in vols.images[32:48]:
        o = det.run(v, eps, base_only=(mode == "base"))
        D.append(o.d); FG.append(o.foreground)
    np.savez_compressed(f"/work/runs/zsmooth/judge-{mode}.npz", d=np.array(D), fg=np.array(FG))
    print(mode, time.time() - t, flush=True)
np.save("/work/runs/zsmooth/judge-masks.npy", np.asarray(vols.masks[32:48]))
