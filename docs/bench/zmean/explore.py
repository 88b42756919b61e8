"""Exploration (validation only): does smoothing D across neighbouring slices help whole-volume Dice?
Maps of the default dae (+MG at its card's eps, and base) on brain-proxy-val32's 32 validation realisations;
tau chosen on realisations 0-15 (the card's choosing set), judged on 16-31."""
import sys, json, time
from pathlib import Path
sys.path.insert(0, "/work/main")
import numpy as np, torch
from scipy import ndimage
from app.core.detector import Detector
from app.core.metrics import dice, fp_per_normal_slice, paired_difference
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
out = Path("/work/runs/zsmooth")
vols = load_volumes("/work/cache/brain-proxy-val32", "val")
model, card = load_checkpoint(resolve_model("dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
print(card["postprocess"], ch)
for mode, eps in (("mg", ch["eps"]), ("base", 0.0)):
    f = out / f"{mode}.npz"
    if f.exists():
        continue
    t = time.time()
    D, FG = [], []
    for v in vols.images:
        o = det.run(v, eps, base_only=(mode == "base"))
        D.append(o.d); FG.append(o.foreground)
    np.savez_compressed(f, d=np.array(D), fg=np.array(FG))
    print(mode, "maps", time.time() - t, flush=True)
np.save(out / "masks.npy", np.asarray(vols.masks))
