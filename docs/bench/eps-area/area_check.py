"""eps scaled per slice by sqrt(brain area / reference area): volume Dice at the card's eps and tau on validation
realisations [a, b) of DATA (the reference: the median brain area over the slices of the 16 choosing volumes)."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from app.core.detector import Detector, foreground_mask
from app.core.metrics import dice
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
model, card = load_checkpoint(resolve_model("dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
ref_v = load_volumes("/work/cache/brain-proxy-val16z", "val")
areas = foreground_mask(ref_v.images[:16].reshape(-1, 128, 128), det.post.foreground_threshold).reshape(-1, 128 * 128).sum(1)
a_ref = float(np.median(areas[areas > 0]))
print("reference area", a_ref)
v = load_volumes(sys.argv[1], "val")
a, b = int(sys.argv[2]), int(sys.argv[3])
out = {"abs": [], "area": []}
scales = []
for r in range(a, b):
    x = v.images[r]; m = v.masks[r].reshape(len(x), 128, 128).astype(bool)
    area = foreground_mask(x.reshape(-1, 128, 128), det.post.foreground_threshold).reshape(len(x), -1).sum(1)
    sc = np.sqrt(np.maximum(area, 1) / a_ref); scales += list(sc)
    for name, eps in (("abs", ch["eps"]), ("area", ch["eps"] * sc)):
        o = det.run(x, eps)
        D = across_volumes(det.post, o.d[None], o.foreground[None], v)[0]
        out[name].append(dice(det.post.mask(D, ch["tau"]), m))
d = np.array(out["area"]) - np.array(out["abs"])
print(f"scale over slices: min {min(scales):.2f} median {np.median(scales):.2f} max {max(scales):.2f}")
print(f"volume Dice abs {100*np.mean(out['abs']):.2f}  area {100*np.mean(out['area']):.2f}  diff {100*d.mean():+.2f} "
      f"(per volume {np.round(100*d, 1).tolist()})")
