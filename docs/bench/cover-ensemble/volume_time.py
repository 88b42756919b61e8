"""Seconds per slice of a volume (Detector.run in 16-slice batches, + MG at the card's choice) for ensemble cards,
back to back on the same 64 test slices, best of two; and the first-slice wait of the viewer, the card's z window
(its slices at 2 mm) solved in one batch, median of three: python volume_time.py DATA CARD [CARD ...]"""
import statistics
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
dets = {name: load_detector(resolve_model(name), "cpu", batch_size=16)[0] for name in sys.argv[2:]}
for det in dets.values():
    det.run(x[:16], 1.0, max_steps=3)  # warm-up
times = {name: [] for name in dets}
for _ in range(2):
    for name, det in dets.items():
        t = time.perf_counter()
        det.run(x, 1.0)
        times[name].append((time.perf_counter() - t) / len(x))
for name, ts in times.items():
    print(f"{name}: {min(ts):.3f} s per slice (runs {', '.join(f'{v:.3f}' for v in ts)}; median {statistics.median(ts):.3f})")
for name, det in dets.items():
    n = det.post.z_slices(2.0)
    ws = []
    for i in range(3):
        t = time.perf_counter()
        det.run(x[i * n : (i + 1) * n], 1.0)
        ws.append(time.perf_counter() - t)
    print(f"{name}: {n}-slice window {statistics.median(ws):.2f} s (runs {', '.join(f'{v:.2f}' for v in ws)})")
