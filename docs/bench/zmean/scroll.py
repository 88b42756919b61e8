"""Scrolling in the viewer's controller at any look time: `bench speed`'s slice_scroll_s
(app.bench.speed.scroll_latency: the default dae on the demo from the slice it opens on, Up twice, with and without
the next slices solved ahead), 2 threads. Usage: python docs/bench/zmean/scroll.py [DWELL_S]"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402

from app.bench.speed import scroll_latency  # noqa: E402

torch.set_num_threads(2)
dwell = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
sc = scroll_latency("dae", "cpu", dwell_s=dwell)["slice_scroll"]
for label, key in (("solved ahead", "ahead_s"), ("without     ", "without_s")):
    print(f"{label}: Up after {dwell:g} s from slice {sc['from_slice']}, twice: "
          + ", ".join(f"{v:.3f} s" for v in sc[key]))
