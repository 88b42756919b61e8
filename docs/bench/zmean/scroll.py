"""Scrolling in the viewer's controller (app.viewer.controller.ViewerController, the code the window runs), default
dae on the demo, +MG at the card's eps, 2 threads, real worker threads (ExecutorLane; reports handed to this
thread as the GUI's event loop would). Slice 73 is asked for; the reader looks at it for DWELL seconds and presses
Up (slice 74), then Up again after DWELL. Times from the key to the final result on screen, with and without the
neighbours solved ahead (prefetch_slices), and the eps grid's precompute off in both (it runs after them).
Usage: python docs/bench/zmean/scroll.py [DWELL]"""

import queue
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

torch.set_num_threads(2)
from app.viewer.controller import ViewerController  # noqa: E402
from app.viewer.jobs import ExecutorLane  # noqa: E402

DWELL = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
inbox: queue.Queue = queue.Queue()


def pump(until, timeout=120.0):
    t_end = time.perf_counter() + timeout
    while not until():
        try:
            inbox.get(timeout=0.005)()
        except queue.Empty:
            pass
        if time.perf_counter() > t_end:
            raise TimeoutError


def run(prefetch: bool) -> list[float]:
    lanes = {n: ExecutorLane(n, inbox.put) for n in ("slice", "volume", "export", "load")}
    ctl = ViewerController(lanes=lanes, device="cpu", precompute_eps_grid=False, prefetch_slices=prefetch)
    ctl.set_model("dae")
    ctl.open_study(ROOT / "resources/demo/demo_t1.nii.gz")
    pump(lambda: ctl.state.study is not None)
    final = lambda k: ctl.shown is not None and ctl.shown.slice_index == k and ctl.shown.final and ctl.shown.eps > 0  # noqa: E731
    ctl.state.slice_index = 73
    pump(lambda: final(73))
    out = []
    for k in (74, 75):
        t_end = time.perf_counter() + DWELL
        pump(lambda: time.perf_counter() > t_end)  # the reader looks; reports keep arriving
        t = time.perf_counter()
        ctl.state.slice_index = k
        pump(lambda k=k: final(k))
        out.append(time.perf_counter() - t)
    for lane in lanes.values():
        lane.cancel()
    return out


if __name__ == "__main__":
    run(True)  # warm-up: model load, kernels
    for prefetch in (False, True):
        a, b = run(prefetch)
        print(f"prefetch {'on ' if prefetch else 'off'}: Up after {DWELL:g} s -> slice 74 final in {a:.3f} s, Up again "
              f"-> slice 75 in {b:.3f} s")
