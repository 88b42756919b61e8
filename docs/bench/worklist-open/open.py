"""How long the viewer's File > Open worklist takes on a large batch folder: N copies of one study's result.json
(RESULT.json, e.g. a `batch` output of the demo study) under other ids and scores, opened twice in the main window
(the second time with the dock visible), then sorted by score; offscreen. Prints, for each open, the seconds until
the list is shown and the GUI thread's longest stall meanwhile (a 5 ms timer's largest gap: the folder is read on a
worker thread since 2026-12-06, later; the stall is then the table's fill), and the sort's seconds.

    QT_QPA_PLATFORM=offscreen python docs/bench/worklist-open/open.py RESULT.json 2000

2026-12-06: before the tables sized their columns once per fill, the second open of 100 / 150 / 300 studies took
1.67 / 6.13 / 18.9 s and of 2,000 did not end within 120 s; after, 2,000 studies: opened in 0.64 and 0.97 s, again
in 0.37 and 0.58 s, sorted in 0.17 and 0.27 s (two runs; docs/viewer.md). Of the first open, 0.31 s was the
reading of the 2,000 result.json files on the GUI thread, now on a worker thread; the table is a model view since,
sized from one text measure per distinct text: the longest stall 0.12-0.19 s, the sort 0.04 s (docs/viewer.md).
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.viewer.worklist import write_worklist  # noqa: E402


def main():
    src, n = json.loads(Path(sys.argv[1]).read_text()), int(sys.argv[2])
    folder = Path(tempfile.mkdtemp(prefix="worklist-open-"))
    results = []
    for i in range(n):
        r = dict(src, id=f"s{i:04d}", score=float(i % 97) / 97)
        (folder / r["id"]).mkdir()
        (folder / r["id"] / "result.json").write_text(json.dumps(r))
        results.append(r)
    write_worklist(folder, results, {"n_pending": 0})
    app = QApplication.instance() or QApplication([])
    from app.gui.window import MainWindow

    w = MainWindow(device="cpu", precompute_eps_grid=False)
    w.show()
    app.processEvents()
    bv = w.batch_views
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    for k in ("first", "again"):
        t = time.perf_counter()
        ticks[:] = [t]
        assert bv.open_worklist(folder)
        while bv.session.reading is not None:  # the event loop, as the window's would run it
            app.processEvents()
            time.sleep(0.001)
        app.processEvents()
        end = time.perf_counter()
        stall = max(b - a for a, b in zip(ticks, [*ticks[1:], end], strict=True))
        print(f"open {k}: shown after {end - t:.3f} s, longest GUI stall {stall:.3f} s", flush=True)
    timer.stop()
    t = time.perf_counter()
    bv.worklist.sort_by_column(2)
    app.processEvents()
    print(f"sort by score: {time.perf_counter() - t:.3f} s", flush=True)
    w.close()
    os._exit(0)  # the window's worker threads need no orderly exit here


if __name__ == "__main__":
    main()
