"""Exploration (the sixteen choosing validation volumes only): test-time adaptation of the dae to the study it
reads. Per realisation, a copy of the shipped dae takes S Adam steps (lr L) of its own training loss (coarse noise
-> clean) on the realisation's own slices (random flips), no labels; then its base map (card post-processing and
z window). Pooled voxel AP and best-tau volume Dice over the 16, against no adaptation."""
import copy, sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from sklearn.metrics import average_precision_score
from app.core.detector import Detector
from app.core.metrics import dice
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(int(__import__("os").environ.get("THREADS", "2")))
data, nvol = sys.argv[1], int(sys.argv[2])
configs = [(int(a.split(":")[0]), float(a.split(":")[1])) for a in sys.argv[3].split(",")]
mg = len(sys.argv) > 4 and sys.argv[4] == "mg"
model0, card = load_checkpoint(resolve_model("dae"), "cpu")
vols = load_volumes(data, "val")
imgs, masks = vols.images[:nvol], vols.masks[:nvol]
taus = np.arange(0.0, 0.3001, 0.005)
eps = card["chosen_volume"]["eps"] if mg else 0.0

def adapt(x, steps, lr, seed):
    m = copy.deepcopy(model0)
    if steps == 0:
        return m
    m.train()
    for p in m.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)
        xb = x[idx]
        flip = torch.rand(16, generator=g) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
        loss = m.training_loss(xb, g)
        opt.zero_grad(); loss.backward(); opt.step()
    return m

for steps, lr in configs:
    t0 = time.time()
    Ds, fgs = [], []
    for i, v in enumerate(imgs):
        x = torch.as_tensor(v, dtype=torch.float32)
        x = x[:, None] if x.dim() == 3 else x
        m = adapt(x, steps, lr, i)
        det = Detector.from_card(m, card, "cpu", batch_size=16)
        o = det.run(x, eps, base_only=not mg)
        Ds.append(across_volumes(det.post, o.d[None], o.foreground[None], vols)[0]); fgs.append(o.foreground)
    D, FG = np.stack(Ds), np.stack(fgs)
    M = masks.astype(bool).reshape(D.shape)
    ap = average_precision_score(M[FG], D[FG])
    best = max(((np.mean([dice(det.post.mask(D[v], t), M[v]) for v in range(len(D))]), t) for t in taus))
    print(f"{'MG' if mg else 'base'} steps {steps} lr {lr:g}: pooled AP {100*ap:.1f}%  best volume Dice {100*best[0]:.1f}% "
          f"at tau {best[1]:.3f}  ({time.time()-t0:.0f} s)", flush=True)
