"""Lesion voxels in the validation and test realisations: how many the card's foreground (after erosion) can see,
their D (post-processed, z window) and the fraction flagged at the card's tau (+MG), by split and lesion kind."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from scipy import ndimage
from app.core.detector import Detector
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.data.lesions import KINDS
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(2)
data = sys.argv[1]
model, card = load_checkpoint(resolve_model("dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
print("post:", det.post.as_dict())
for sp, n in (("val", 16), ("test", 5)):
    v = load_volumes(data, sp)
    tot = dict(les=0, seen=0, flagged=0); dsum = 0.0; per_kind = {k: [0, 0] for k in KINDS}; contrast = []
    for r in range(min(n, len(v.images))):
        o = det.run(v.images[r], ch["eps"])
        D = across_volumes(det.post, o.d[None], o.foreground[None], v)[0]
        flag = det.post.mask(D, ch["tau"])
        m = v.masks[r].reshape(D.shape).astype(bool); k = v.kinds[r].reshape(D.shape)
        x = v.images[r].reshape(D.shape); c = v.clean.reshape(D.shape)
        seen = m & (D > 0)  # D is 0 outside the (eroded) foreground
        tot["les"] += m.sum(); tot["seen"] += seen.sum(); tot["flagged"] += (flag & m).sum(); dsum += D[m].sum()
        contrast.append(np.abs(x - c)[m].mean())
        for i, kk in enumerate(KINDS):
            mk = m & (k == i + 1); per_kind[kk][0] += mk.sum(); per_kind[kk][1] += (flag & mk).sum()
    print(f"{sp}: lesion voxels {tot['les']}, inside the map's support {tot['seen'] / tot['les']:.1%}, "
          f"recall {tot['flagged'] / tot['les']:.1%}, mean D in lesions {dsum / tot['les']:.4f}, "
          f"mean |x - clean| in lesions {np.mean(contrast):.3f}")
    print("   recall by kind:", ", ".join(f"{k} {b / max(a, 1):.0%} of {a}" for k, (a, b) in per_kind.items()))
