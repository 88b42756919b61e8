"""Exploration (choosing volumes only): test-time noise averaging for the dae base map.
s_K = mean_k f(x + n_k), n_k the training's coarse noise; D = |x - s_K|; card post + z window; tau by volume Dice."""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from sklearn.metrics import average_precision_score
from app.core.detector import Detector
from app.core.metrics import dice
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

torch.set_num_threads(2)
data, nvol = sys.argv[1], int(sys.argv[2])
model, card = load_checkpoint(resolve_model(sys.argv[3] if len(sys.argv) > 3 else "dae"), "cpu")
det = Detector.from_card(model, card, "cpu", batch_size=16)
m = det.model
vols = load_volumes(data, "val")
imgs, masks = vols.images[:nvol], vols.masks[:nvol]
taus = np.arange(0.0, 0.3001, 0.005)

def s_of(x, K, std_scale, seed):
    with torch.no_grad():
        if K == 0:
            return m.decode(m.encode(x))
        if K == -1:  # flip average (left-right)
            return 0.5 * (m.decode(m.encode(x)) + m.decode(m.encode(x.flip(-1))).flip(-1))
        if K == -2:  # flips both axes
            return 0.25 * sum(m.decode(m.encode(x.flip(ds))).flip(ds) if ds else m.decode(m.encode(x)) for ds in [(), (-1,), (-2,), (-1, -2)])
        g = torch.Generator().manual_seed(seed)
        acc = torch.zeros_like(x)
        for k in range(K):
            n = m.training_noise(x, g) * std_scale
            acc += m.decode(m.encode(x + n))
        return acc / K

def evaluate(K, std_scale):
    t0 = time.time()
    Ds, fgs = [], []
    for i, v in enumerate(imgs):
        x = torch.as_tensor(v, dtype=torch.float32); x = x[:, None] if x.dim() == 3 else x
        s = torch.cat([s_of(x[j:j+16], K, std_scale, 1000 * i + j) for j in range(0, len(x), 16)])
        d, fg = det.maps(x, s)
        Ds.append(across_volumes(det.post, d[None], fg[None], vols)[0]); fgs.append(fg)
    D, FG, M = np.stack(Ds), np.stack(fgs), masks.astype(bool).reshape(np.stack(Ds).shape)
    ap = average_precision_score(M[FG], D[FG])
    best = max(((np.mean([dice(det.post.mask(D[v], t), M[v]) for v in range(len(D))]), t) for t in taus))
    print(f"K={K} std x{std_scale}: pooled AP {100*ap:.1f}%  best volume Dice {100*best[0]:.1f}% at tau {best[1]:.3f}"
          f"  ({time.time()-t0:.0f} s)", flush=True)

for K, sc in [(int(a.split(':')[0]), float(a.split(':')[1])) for a in sys.argv[4].split(',')]:
    evaluate(K, sc)
