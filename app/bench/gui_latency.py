"""GUI latency figures for ``bench speed``, measured offscreen (Qt's ``offscreen`` platform, no display needed):

* ``tau_update_ms``: median time from a tau change to the repainted detection panel (256x256 slice): the
  threshold, the Figure-2 colouring, ``ImageItem.setImage`` and a synchronous ``repaint()`` of the view.
* ``gui_max_stall_ms``: the longest gap between ticks of a 2 ms timer in the GUI thread while a worker thread
  optimises (and sends intermediate pseudo-normal images that the GUI paints, as the viewer does), minus the
  timer period.

Qt is imported inside the functions so that ``app.bench`` stays importable without Qt (a layout rule).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from typing import Any

import numpy as np
import torch

from app.core.maps import confusion_rgb


def _qapp():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication([])


def _d_map_256(det, images: np.ndarray, masks: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """A real difference map and ground truth, upsampled to 256x256 (the issue's panel size)."""
    from scipy import ndimage

    abn = np.flatnonzero(masks.reshape(len(masks), -1).any(axis=1))
    k = int(abn[0]) if abn.size else 0
    out = det.run(images[k : k + 1], eps, max_steps=50)
    f = 256 / out.d.shape[-1]
    d = ndimage.zoom(out.d[0], f, order=1).astype(np.float32)
    gt = ndimage.zoom(masks[k].astype(np.uint8), f, order=0).astype(bool)
    return d, gt


def tau_update_minimal(d: np.ndarray, gt: np.ndarray, repeats: int = 60) -> dict[str, Any]:
    """The detection panel's repaint path with a bare pyqtgraph view: ViewBox + input ImageItem + RGBA overlay."""
    import pyqtgraph as pg

    app = _qapp()
    win = pg.GraphicsLayoutWidget()
    win.resize(600, 600)
    vb = win.addViewBox(lockAspect=True)
    base = pg.ImageItem(d)
    overlay = pg.ImageItem()
    vb.addItem(base)
    vb.addItem(overlay)
    win.show()
    app.processEvents()
    taus = np.linspace(0.02, 0.5, repeats)
    times = []
    for tau in taus:
        t = time.perf_counter()
        pred = d > tau
        rgba = np.zeros((*pred.shape, 4), np.uint8)
        rgba[..., :3] = confusion_rgb(pred, gt)
        rgba[..., 3] = np.where(pred | gt, 160, 0)
        overlay.setImage(rgba, autoLevels=False)
        win.viewport().repaint()
        times.append((time.perf_counter() - t) * 1e3)
    shown = int(np.count_nonzero(np.asarray(overlay.image)[..., 3]))  # what the last repaint put on screen
    win.close()
    return {
        "tau_update_ms": statistics.median(times),
        "tau_update_ms_max": max(times),
        "tau_repeats": repeats,
        "last_tau": float(taus[-1]),
        "overlay_coloured_px": shown,
    }


def stall_minimal(det, x: np.ndarray, eps: float, timer_ms: int = 2) -> dict[str, Any]:
    """Longest GUI-thread stall while a worker thread runs MatchGen with progress images every 10 steps."""
    import pyqtgraph as pg
    from PySide6.QtCore import QObject, QTimer, Signal

    app = _qapp()

    class Bridge(QObject):
        partial = Signal(object)
        finished = Signal()

    bridge = Bridge()
    win = pg.GraphicsLayoutWidget()
    vb = win.addViewBox(lockAspect=True)
    item = pg.ImageItem(np.zeros(x.shape[-2:], np.float32))
    vb.addItem(item)
    win.show()
    bridge.partial.connect(lambda s: item.setImage(s, autoLevels=False))
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(timer_ms)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    done = threading.Event()
    bridge.finished.connect(done.set)

    def work():
        xt = torch.from_numpy(x)
        det.solve_batch(xt, eps, callback=lambda p: bridge.partial.emit(p.s[0, 0].float().cpu().numpy().copy()))
        bridge.finished.emit()

    th = threading.Thread(target=work, daemon=True)
    timer.start()
    t0 = time.perf_counter()
    th.start()
    while not done.is_set() and time.perf_counter() - t0 < 120:
        app.processEvents()
        time.sleep(0.0005)
    timer.stop()
    th.join(timeout=5)
    win.close()
    gaps = np.diff(ticks) * 1e3 if len(ticks) > 1 else np.zeros(1)
    return {
        "gui_max_stall_ms": float(max(gaps.max() - timer_ms, 0.0)),
        "gui_stall_p99_ms": float(np.percentile(gaps, 99) - timer_ms),
        "gui_stall_window_s": time.perf_counter() - t0,
        "gui_stall_ticks": len(ticks),
    }


def measure_viewer(model: str, device: str, workdir, eps: float, repeats: int = 60) -> dict[str, Any]:
    """Both figures through the real viewer (``app.bench.gui_probe``): a 256x256x24 phantom study with its mask
    opened in ``MainWindow``; tau changes timed to the repainted detection panel; then eps changed so that
    the viewer's worker optimises the slice while a 5 ms timer measures the event loop's longest stall."""
    from pathlib import Path

    from app.bench.speed import write_phantom_volume

    _qapp()
    from app.bench.gui_probe import measure_worker_stall, open_viewer, time_tau_updates

    wd = Path(workdir)
    study = write_phantom_volume(wd / "study.nii.gz", (256, 256, 24), mask_path=wd / "mask.nii.gz")
    win = open_viewer(str(study), str(wd / "mask.nii.gz"), model=model, device=device)
    try:
        ms = time_tau_updates(win, np.linspace(0.02, 0.5, repeats))
        stall = measure_worker_stall(win, eps=float(eps))
        solver = win.session.detector.solver
    finally:
        win.close()
    return {
        "gui_path": "the viewer (app.gui.window.MainWindow via app.bench.gui_probe), 256x256 phantom study, its own "
        f"worker and solver ({solver.method}, {solver.precision})",
        "tau_update_ms": statistics.median(ms),
        "tau_update_ms_max": max(ms),
        "tau_repeats": repeats,
        "gui_max_stall_ms": stall["max_stall_ms"],
        "gui_stall_window_s": stall["seconds"],
        "gui_stall_ticks": stall["ticks"],
        "gui_stall_finished": stall["finished"],
    }


def measure_gui(det, images, masks, eps: float, tau: float, *, model=None, device="cpu", workdir=None) -> dict:
    """The viewer's figures when the viewer is available (and a model and a work folder are given); otherwise
    the minimal pyqtgraph path, stated in ``gui_path``."""
    if model is not None and workdir is not None:
        try:
            import app.bench.gui_probe  # noqa: F401
        except ImportError:
            pass
        else:
            return measure_viewer(model, device, workdir, eps)
    d, gt = _d_map_256(det, images, masks, eps)
    res: dict[str, Any] = {"gui_path": "minimal pyqtgraph ViewBox + ImageItem (the viewer is not available)"}
    res.update(tau_update_minimal(d, gt))
    res.update(stall_minimal(det, images[: min(len(images), det.batch_size)], eps))
    return res
