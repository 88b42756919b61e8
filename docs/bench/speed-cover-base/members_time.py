"""Where the default's volume time goes: each member's raw run (Detector.run, 16-slice batches, + MG at the card's
choice; the base member's forward pass), the combination and post-processing, and the ensemble's own run, on the
same 64 test slices, twice: python members_time.py DATA [MODEL]  (default MODEL: dae+dae-cover-base+ae-l1)"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
import numpy as np  # noqa: E402
import torch  # noqa: E402

from app.core.ensemble import load_detector  # noqa: E402
from app.data.splits import load_volumes  # noqa: E402
from app.nets.zoo import resolve_model  # noqa: E402

torch.set_num_threads(2)
x = np.asarray(load_volumes(sys.argv[1], "test").images).reshape(-1, 1, 128, 128)[:64]
name = sys.argv[2] if len(sys.argv) > 2 else "dae+dae-cover-base+ae-l1"
det = load_detector(resolve_model(name), "cpu", batch_size=16)[0]
det.run(x[:16], 1.0, max_steps=3)  # warm-up
for _ in range(2):
    t0 = time.perf_counter()
    runs = []
    for m in det.members:
        t = time.perf_counter()
        runs.append(m.detector.run(x, m.eps, base_only=m.eps == 0, raw=True))
        dt = (time.perf_counter() - t) / len(x)
        print(f"{m.name}: eps {m.eps:.4g}, {dt:.4f} s per slice, mean steps {runs[-1].steps.mean():.1f}")
    t = time.perf_counter()
    det.combine(runs, False)
    print(f"combine + post-processing: {(time.perf_counter() - t) / len(x):.4f} s per slice")
    print(f"sum: {(time.perf_counter() - t0) / len(x):.4f} s per slice")
    t = time.perf_counter()
    det.run(x, 1.0)
    print(f"the ensemble's run: {(time.perf_counter() - t) / len(x):.4f} s per slice")
