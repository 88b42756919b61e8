"""How long the GUI thread is busy per tau step while a study with a whole-volume result is open (a worklist study
whose batch saved its maps, `batch --maps`): the findings list and the detection are recomputed for the whole volume
at every tau. Offscreen; opens the worklist, double-clicks the first study, then moves tau ten steps, with the
orthogonal views hidden and shown.

2026-12-06 (latest), the demo (128 x 62 x 128) on this session's AVX2 CPU, GUI thread per tau step, views hidden /
shown: 0.120 / 0.134 s before; 0.055 / 0.073 s with the findings' centres from the labelled voxels only; 0.002 /
0.023 s with the findings computed on a worker thread (what remains with the views shown is their own detection).

    QT_QPA_PLATFORM=offscreen python docs/bench/tau-volume/tau_drag.py BATCH_OUT_WITH_MAPS
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
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
    wait(app, lambda: bv.session.reading is None and bv.session.worklist is not None)
    entry = bv.session.worklist.entries[0]
    bv.open_entry(entry)
    wait(app, lambda: bv.session.current is entry and w.ctl.shown is not None)
    print(f"{entry.id}: grid {w.state.study.raw.shape}, saved maps: {bv.session.saved.d is not None}")
    tau0 = w.state.tau
    for ortho in (False, True):
        if ortho:
            bv.toggle_ortho()
            wait(app, lambda: True)
        times = []
        for i in range(10):
            t = time.perf_counter()
            w.state.tau = tau0 * (1.0 + 0.05 * (i + 1))  # as one step of the slider
            times.append(time.perf_counter() - t)
            app.processEvents()
        # the findings of the last tau, when they are computed off the GUI thread
        wait(app, lambda: bv.session.findings_lane is None or bv.session.findings_lane.is_idle())
        print(
            f"orthogonal views {'shown' if ortho else 'hidden'}: GUI thread per tau step median "
            f"{statistics.median(times):.3f} s, max {max(times):.3f} s ({len(bv.session.findings or [])} findings)"
        )
        w.state.tau = tau0
        app.processEvents()
    w.close()
    import os

    os._exit(0)


if __name__ == "__main__":
    main()
