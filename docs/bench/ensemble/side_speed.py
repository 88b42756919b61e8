"""A side measurement (not a benchmark): seconds per slice of a volume run, dae against dae+ae-l1, same slices, same
process, 2 threads, batches of 16 (bench speed's volume setting), best of 2."""
import sys, time
sys.path.insert(0, "/work/main")
import numpy as np, torch
torch.set_num_threads(2)
from app.core.detector import Detector
from app.core.ensemble import load_ensemble
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model
vols = load_volumes("/work/cache/brain-proxy-val16z", "val")
x = np.asarray(vols.images[:6]).reshape(-1, 1, 128, 128)[:128]
model, card = load_checkpoint(resolve_model("dae"), "cpu")
dae = Detector.from_card(model, card, "cpu", batch_size=16)
ens, ecard = load_ensemble("/work/main/models/dae+ae-l1.json", "cpu", batch_size=16)
for name, det, eps in (("dae", dae, card_choices(card)["eps"]), ("dae+ae-l1", ens, 1.0)) * 2:
    det.run(x[:16], eps)  # warm
    t = time.perf_counter(); det.run(x, eps); dt = time.perf_counter() - t
    print(name, f"{dt / len(x):.3f} s per slice", flush=True)
