"""The judged E1 card (tau in scaled units; old combine) and the shipped card (dae units) flag the same voxels."""
import sys, json
sys.path.insert(0, "/work/main")
import numpy as np, torch
torch.set_num_threads(2)
from app.core.ensemble import load_ensemble
from app.core.protocol import across_volumes
from app.data.splits import load_volumes
vols = load_volumes("/work/cache/brain-proxy-val160z", "val")
ens, card = load_ensemble("/work/main/models/dae+ae-l1.json")
old = json.load(open("/work/main/docs/bench/ensemble/E1.json"))["chosen_volume"]
for r in range(128, 132):
    for base in (False, True):
        runs = ens.raw_runs(vols.images[r], 1.0, base_only=base)
        new_d, fg = ens.combine(runs, base)
        old_d, _ = ens.combine(runs, base, unit=1.0)
        a = across_volumes(ens.post, new_d[None], fg[None], vols)[0]
        b = across_volumes(ens.post, old_d[None], fg[None], vols)[0]
        ma = ens.post.mask(a, card["chosen_volume"]["tau_base" if base else "tau"])
        mb = ens.post.mask(b, old["tau_base" if base else "tau"])
        print(r, "base" if base else "mg", int(ma.sum()), int(mb.sum()), "differ:", int((ma != mb).sum()), flush=True)
