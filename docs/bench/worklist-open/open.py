"""How long the viewer's File > Open worklist takes on a large batch folder: N copies of one study's result.json
(RESULT.json, e.g. a `batch` output of the demo study) under other ids and scores, opened twice in the main window
(the second time with the dock visible), then sorted by score; offscreen. Prints seconds on the GUI thread.

    QT_QPA_PLATFORM=offscreen python docs/bench/worklist-open/open.py RESULT.json 2000

2026-12-06: before the tables sized their columns once per fill, the second open of 100 / 150 / 300 studies took
1.67 / 6.13 / 18.9 s and of 2,000 did not end within 120 s; after, 2,000 studies: opened in 0.64 and 0.97 s, again
in 0.37 and 0.58 s, sorted in 0.17 and 0.27 s (two runs; docs/viewer.md).
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
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
    for k in ("first", "again"):
        t = time.perf_counter()
        assert bv.open_worklist(folder)
        app.processEvents()
        print(f"open {k}: {time.perf_counter() - t:.3f} s", flush=True)
    t = time.perf_counter()
    bv.worklist.sort_by_column(2)
    app.processEvents()
    print(f"sort by score: {time.perf_counter() - t:.3f} s", flush=True)
    w.close()
    os._exit(0)  # the window's worker threads need no orderly exit here


if __name__ == "__main__":
    main()
