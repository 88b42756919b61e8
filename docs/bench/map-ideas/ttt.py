"""Test-time training of the dae on each study's own slices (its training objective, flips; NORM_ONLY=1 adapts only the
GroupNorm scales and shifts): python ttt.py DATA SPLIT OUT.npz LR STEPS1,STEPS2 [n realisations]"""
import sys, copy, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
torch.set_num_threads(2)
from app.core.detector import Detector
from app.nets.checkpoint import load_checkpoint
from app.nets.card import card_choices
from app.nets.zoo import resolve_model
from app.data.splits import load_volumes
data, split, out, lr = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
checkpoints = [int(s) for s in sys.argv[5].split(",")]
n = int(sys.argv[6]) if len(sys.argv) > 6 else None
import os
NORM_ONLY = os.environ.get('NORM_ONLY') == '1'
stem = resolve_model("dae").with_suffix("")
model0, card = load_checkpoint(stem, "cpu")
eps = card_choices(card)["eps"]
vols = load_volumes(data, split)
imgs = np.asarray(vols.images)[:n]
res = {f"d_{k}_{m}": [] for k in checkpoints for m in ("mg", "base")}
gen = torch.Generator().manual_seed(0)
t0 = time.time()
for r in range(len(imgs)):
    x = torch.from_numpy(np.ascontiguousarray(imgs[r])).float()
    model = copy.deepcopy(model0)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    params = [p for mod in model.modules() if isinstance(mod, torch.nn.GroupNorm) for p in mod.parameters()] \
        if NORM_ONLY else list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    done = 0
    for k in checkpoints:
        while done < k:
            idx = torch.randperm(len(x), generator=gen)[:16]
            xb = x[idx]
            flip = torch.rand(len(xb), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            opt.zero_grad(set_to_none=True)
            loss = model.training_loss(xb, gen)
            loss.backward()
            opt.step()
            done += 1
        model.eval()
        m = copy.deepcopy(model)
        for p in m.parameters():
            p.requires_grad_(False)
        det = Detector.from_card(m, card, "cpu", batch_size=16)
        for mode, f in (("mg", 1.0), ("base", 0.0)):
            run = det.run(imgs[r], eps * f, base_only=(f == 0), raw=True)
            res[f"d_{k}_{mode}"].append(run.d.astype(np.float32))
        model.train()
        print(f"realisation {r} step {k} loss {float(loss.detach()):.4f} {time.time() - t0:.0f} s", flush=True)
np.savez_compressed(out, **{k: np.concatenate(v) for k, v in res.items()})
