"""How long the GUI thread is busy per tau step while a study with a whole-volume result is open (a worklist study
whose batch saved its maps, `batch --maps`): the findings list and the detection are recomputed for the whole volume
at every tau. Offscreen; opens the worklist, double-clicks the first study, then moves tau ten steps, with the
orthogonal views hidden and shown.

2026-12-06 (latest), the demo (128 x 62 x 128) on this session's AVX2 CPU, each commit's code with this script, one
after another while a test run shared the machine; GUI thread per tau step (median) and the longest stall over the ten
steps and the findings' arrival, views hidden / shown:
- 60e0a85 (before): 0.132 / 0.136 s per step, stalls 0.191 / 0.198 s;
- 05267c5 (centres from the labelled voxels only): 0.057 / 0.083 s, stalls 0.099 / 0.135 s;
- now (findings on a worker thread; the views take their detection from it): 0.002 / 0.002 s, stalls 0.025 /
  0.030 s.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402


def wait(app, cond, timeout=120.0):
    t = time.perf_counter()
    while not cond():
        app.processEvents()
        time.sleep(0.005)
        if time.perf_counter() - t > timeout:
            raise TimeoutError
    app.processEvents()


def main():
    app = QApplication.instance() or QApplication([])
    from app.gui.window import MainWindow

    w = MainWindow(device="cpu", precompute_eps_grid=False, prefetch_slices=False)
    w.resize(1400, 900)
    w.show()
    bv = w.batch_views
    bv.open_worklist(sys.argv[1])
    wait(app, lambda: getattr(bv.session, "reading", None) is None and bv.session.worklist is not None)
    entry = bv.session.worklist.entries[0]
    bv.open_entry(entry)
    wait(app, lambda: bv.session.current is entry and w.ctl.shown is not None)
    print(f"{entry.id}: grid {w.state.study.raw.shape}, saved maps: {bv.session.saved.d is not None}")
    tau0 = w.state.tau
    lane = getattr(bv.session, "findings_lane", None)  # none before 2026-12-06 (latest)
    ticks = []  # a 5 ms timer's ticks: the longest gap is the GUI thread's longest stall
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    for ortho in (False, True):
        if ortho:
            bv.toggle_ortho()
            wait(app, lambda: True)
        times = []
        ticks[:] = [time.perf_counter()]
        timer.start(5)
        for i in range(10):
            t = time.perf_counter()
            w.state.tau = tau0 * (1.0 + 0.05 * (i + 1))  # as one step of the slider
            times.append(time.perf_counter() - t)
            app.processEvents()
            t_next = time.perf_counter() + 0.03  # a reader drags the slider: a step every few tens of ms
            while time.perf_counter() < t_next:
                app.processEvents()
                time.sleep(0.001)
        # the findings of the last tau, when they are computed off the GUI thread
        wait(app, lambda: lane is None or lane.is_idle())
        timer.stop()
        stall = max(b - a for a, b in zip(ticks, [*ticks[1:], time.perf_counter()], strict=True))
        print(
            f"orthogonal views {'shown' if ortho else 'hidden'}: GUI thread per tau step median "
            f"{statistics.median(times):.3f} s, max {max(times):.3f} s; longest GUI stall over the ten steps and the "
            f"findings' arrival {stall:.3f} s ({len(bv.session.findings or [])} findings)"
        )
        w.state.tau = tau0
        app.processEvents()
    w.close()
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
