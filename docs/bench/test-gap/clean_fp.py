"""Where the default dae's map is noisy on normal tissue: the clean (lesion-free) slices of the validation block
and of the test blocks, D after the card's post-processing and z window, false-positive pixels per slice at the
card's tau (base and +MG), by slice position (validation/test slices only as a diagnostic: nothing is chosen)."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from app.core.detector import Detector
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(2)
data = sys.argv[1]
model, card = load_checkpoint(resolve_model(sys.argv[2] if len(sys.argv) > 2 else "dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
for sp in ("val", "test"):
    v = load_volumes(data, sp)
    for mode, eps, tau in (("base", 0.0, ch["tau_base"]), ("+MG", ch["eps"], ch["tau"])):
        o = det.run(v.clean, eps, base_only=(mode == "base"))
        D = across_volumes(det.post, o.d[None], o.foreground[None], v)[0]
        flag = det.post.mask(D, tau)
        fg = o.foreground
        fp = flag.reshape(len(flag), -1).sum(1)
        area = fg.reshape(len(fg), -1).sum(1)
        md = np.array([D[i][fg[i]].mean() if fg[i].any() else 0 for i in range(len(D))])
        print(f"{sp} {mode} tau {tau:.3f}: FP px per slice {fp.mean():.1f} (total {fp.sum()}), mean D on brain {md.mean():.4f}")
        print("   z:", " ".join(f"{z}:{f}" for z, f in zip(v.z, fp)))
