"""The dae adapted to each study (ttt.py) against the shipped dae, alone and in the ensemble, on the same
realisations: python ttt_eval.py CACHE.npz TTT.npz [TTT2.npz ...]"""
import sys
from pathlib import Path

import numpy as np

from common import Cache, ensemble, evaluator

det = ensemble()
tts = [np.load(p) for p in sys.argv[2:]]
cache = Cache(sys.argv[1], n=len(tts[0][tts[0].files[0]]))
evaluate = evaluator(cache, det.post)
normal = evaluate.normal
print("| map | pooled AP % | mean volume Dice % | per volume |\n|---|---|---|---|")
for mode in ("mg", "base"):
    dae, ae = cache.member("dae", mode), cache.member("ae-l1", mode)
    evaluate(f"{mode}: dae (shipped)", dae)
    evaluate(f"{mode}: ensemble (shipped)", dae + ae)
    for p, t in zip(sys.argv[2:], tts):
        for key in sorted(t.files):
            if key.endswith("_" + mode):
                steps = key.split("_")[1]
                d = t[key] / np.median(t[key][normal]) * np.median(dae[normal])  # in the shipped dae's unit
                evaluate(f"{mode}: dae, {Path(p).stem} {steps} steps", d)
                evaluate(f"{mode}: ensemble, {Path(p).stem} {steps} steps", d + ae)
