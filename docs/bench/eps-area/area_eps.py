"""Diagnostic: does MatchGen's lesion residual shrink more on slices with a small brain section? Per abnormal
slice of validation (16) and test (first N) realisations: foreground area, mean raw D in lesions for base and +MG
(card eps), and ||z_o|| of the dae; grouped by area."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))
import numpy as np, torch
from app.core.detector import Detector
from app.data.splits import load_volumes
from app.nets.card import card_choices
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model
torch.set_num_threads(1)
model, card = load_checkpoint(resolve_model("dae"), "cpu")
ch = card_choices(card)
det = Detector.from_card(model, card, "cpu", batch_size=16)
rows = []
for data, sp, n in (("/work/cache/brain-proxy-val16z", "val", 16), ("/work/cache/brain-proxy-t32z", "test", int(sys.argv[1]))):
    v = load_volumes(data, sp)
    for r in range(n):
        x = v.images[r]; m = v.masks[r].reshape(len(x), 128, 128).astype(bool)
        keep = np.flatnonzero(m.reshape(len(x), -1).sum(1) > 0)
        xb = x[keep]
        ob = det.run(xb, 0.0, base_only=True, raw=True); om = det.run(xb, ch["eps"], raw=True)
        for j, i in enumerate(keep):
            fg = ob.foreground[j]; mm = m[i] & fg
            if mm.sum() == 0: continue
            rows.append((sp, int(fg.sum()), float(ob.d[j][mm].mean()), float(om.d[j][mm].mean()),
                         float(ob.d[j][fg & ~m[i]].mean()), float(om.d[j][fg & ~m[i]].mean())))
rows = np.array(rows, dtype=object)
edges = [0, 3000, 5000, 7000, 9000, 20000]
print("| split | brain px | slices | lesion D base | lesion D +MG | ratio | tissue D base | tissue D +MG | ratio |")
for sp in ("val", "test"):
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = [r for r in rows if r[0] == sp and lo <= r[1] < hi]
        if not sel: continue
        a = np.array([r[1:] for r in sel], dtype=float)
        print(f"| {sp} | {lo}-{hi} | {len(a)} | {a[:,1].mean():.4f} | {a[:,2].mean():.4f} | {a[:,2].mean()/a[:,1].mean():.2f} | "
              f"{a[:,3].mean():.4f} | {a[:,4].mean():.4f} | {a[:,4].mean()/a[:,3].mean():.2f} |")
