"""An earlier commit's solver against the current one, alternately in one process (same model, batch, eps):
times and whether z and s are bit-identical. Save the old one first:
git show 006d067:app/core/matchgen.py > /tmp/matchgen_old.py (the solver before 482aeb1)"""

import importlib.util
import sys
import time
from dataclasses import replace

import torch

import app.core.matchgen as new
from app.core.detector import Detector
from app.data.splits import load_split
from app.nets.card import card_choices, card_solver
from app.nets.checkpoint import load_checkpoint
from app.nets.zoo import resolve_model

spec = importlib.util.spec_from_file_location("matchgen_old", "/tmp/matchgen_old.py")
old = importlib.util.module_from_spec(spec)
sys.modules["matchgen_old"] = old
spec.loader.exec_module(old)

torch.set_num_threads(2)
model, card = load_checkpoint(resolve_model("dae"), "cpu")
det = Detector.from_card(model, card, "cpu", batch_size=16)
x = torch.from_numpy(load_split("/work/cache/brain-proxy-v2z", "test").images[:16].copy())
eps = card_choices(card)["eps"]
m = det.model
with torch.no_grad():
    z0 = m.encode(x)
for steps in (12, 20):
    opts = replace(card_solver(card), rtol=0.0, patience=10**6, max_steps=steps)
    t = {"old": [], "new": []}
    outs = {}
    for _rep in range(4):
        for name, mod in (("old", old), ("new", new)):
            a = time.perf_counter()
            r = mod.optimize(m.decode, x, z0, eps, options=opts)
            t[name].append(time.perf_counter() - a)
            outs[name] = r
    same = torch.equal(outs["old"].s, outs["new"].s) and torch.equal(outs["old"].z, outs["new"].z)
    print(steps, {k: [round(v, 3) for v in sorted(vs)] for k, vs in t.items()}, "identical:", same)
