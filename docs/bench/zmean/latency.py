"""Single-slice request latency in the viewer's compute layer (ModelSession.solve_slice), default dae on the demo,
slice 73, +MG at the card's eps, 2 threads: cold (the whole z window solved), the next slice (reuses the cached
neighbours), and without a window. Best of 3; every repeat from a fresh session for the cold case."""
import sys, time
sys.path.insert(0, "/work/main")
import torch
torch.set_num_threads(2)
from dataclasses import replace
from app.io import load_study
from app.viewer.compute import ModelSession
from app.viewer.slices import StudySlices
st = StudySlices(load_study("/work/main/resources/demo/demo_t1.nii.gz"))
base = ModelSession.load("dae", st, device="cpu")
base.slices.prepare()
eps = base.choices["eps"]
base.solve_slice(60, eps)  # warm-up
cold, nxt, plain = [], [], []
for _ in range(3):
    s = base.bind(st)
    t = time.perf_counter(); s.solve_slice(73, eps); cold.append(time.perf_counter() - t)
    t = time.perf_counter(); s.solve_slice(74, eps); nxt.append(time.perf_counter() - t)
    p = base.bind(st); p.detector = __import__("copy").copy(p.detector); p.detector.post = replace(p.detector.post, z_mm=0.0)
    t = time.perf_counter(); p.solve_slice(73, eps); plain.append(time.perf_counter() - t)
print(f"z window {base.detector.post.z_mm:g} mm: cold {min(cold):.2f} s, next slice {min(nxt):.2f} s; no window {min(plain):.2f} s (best of 3)")
