"""The kept blob-noise dae's raw maps (+ MG at its card's eps, and base) on the sixteen choosing volumes:
python cache_cover.py DATA OUT.npz"""
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
import numpy as np, torch
torch.set_num_threads(2)
from app.core.detector import Detector
from app.nets.checkpoint import load_checkpoint
from app.nets.card import card_choices
from app.data.splits import load_volumes
model, card = load_checkpoint(ROOT / "models/dae-cover", "cpu")
det = Detector.from_card(model, card, "cpu", batch_size=16)
eps = card_choices(card)["eps"]
vols = load_volumes(sys.argv[1], "val")
imgs = np.asarray(vols.images)
flat = imgs.reshape(-1, *imgs.shape[2:])
res = {}
for mode, f in (("mg", 1.0), ("base", 0.0)):
    run = det.run(flat, eps * f, base_only=(f == 0), raw=True)
    res[f"d_{mode}"] = run.d.astype(np.float32)
    print(mode, flush=True)
np.savez_compressed(sys.argv[2], **res)
