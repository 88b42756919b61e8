"""Measuring the real viewer, offscreen, for the speed benchmark (``bench speed``) and the tests.

* :func:`time_tau_updates`: milliseconds from setting tau to the detection panel repainted (the state change
  re-colours the overlay synchronously; the view is then repainted synchronously, so the time covers both).
* :class:`StallMeter` / :func:`measure_worker_stall`: the longest gap in the GUI event loop while the worker
  optimises. A timer ticks every ``interval_ms``; a tick that arrives late means the GUI thread could not run
  (e.g. the worker held the GIL, or the GUI did heavy work). ``max_stall_ms`` is the longest lateness.

It lives with the benchmark, not in the shipped GUI package; Qt is imported inside the functions so that
``app.bench`` stays importable without Qt.

Usage (offscreen, QT_QPA_PLATFORM=offscreen)::

    from app.bench.gui_probe import open_viewer, time_tau_updates, measure_worker_stall
    win = open_viewer(study_path, model="ae-l1")      # waits for the first result
    ms = time_tau_updates(win, np.linspace(0.05, 0.5, 50))
    stall = measure_worker_stall(win, eps=0.3)        # {"max_stall_ms", "seconds", "ticks"}
    win.close()
"""

from __future__ import annotations

import time


class StallMeter:
    def __init__(self, interval_ms: int = 5):
        from PySide6.QtCore import QElapsedTimer, QTimer

        self.interval_ms = interval_ms
        self._timer = QTimer()
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._tick)
        self._clock = QElapsedTimer()
        self._last = 0.0
        self.max_stall_ms = 0.0
        self.ticks = 0

    def _tick(self) -> None:
        now = self._clock.nsecsElapsed() / 1e6
        gap = now - self._last
        self._last = now
        self.ticks += 1
        self.max_stall_ms = max(self.max_stall_ms, gap - self.interval_ms)

    def start(self) -> None:
        self.max_stall_ms = 0.0
        self.ticks = 0
        self._clock.start()
        self._last = 0.0
        self._timer.start()

    def stop(self) -> float:
        self._timer.stop()
        return self.max_stall_ms


def process_until(predicate, timeout_s: float = 60.0, step_s: float = 0.002) -> bool:
    """Run the Qt event loop until ``predicate()`` holds or the timeout passes."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    t_end = time.perf_counter() + timeout_s
    while time.perf_counter() < t_end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())


def time_tau_updates(window, taus) -> list[float]:
    """Milliseconds per tau change until the detection panel is repainted (one value per tau)."""
    out = []
    view = window.panels.viewport()
    for t in taus:
        t0 = time.perf_counter()
        window.state.tau = float(t)
        view.repaint()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure_worker_stall(window, eps: float, timeout_s: float = 120.0, interval_ms: int = 5) -> dict:
    """Set eps (dropping cached results so the worker really optimises) and report the event loop's longest
    stall until the worker is idle again."""
    window.cache.clear()
    meter = StallMeter(interval_ms)
    meter.start()
    t0 = time.perf_counter()
    window.state.use_mg = True
    if abs(window.state.eps - eps) < 1e-12:
        window.request()
    else:
        window.state.eps = eps
    process_until(lambda: not window.worker.is_idle(), 5.0)
    ok = process_until(window.worker.is_idle, timeout_s)
    meter.stop()
    return {
        "max_stall_ms": meter.max_stall_ms,
        "seconds": time.perf_counter() - t0,
        "ticks": meter.ticks,
        "finished": ok,
    }


def open_viewer(study: str, mask: str | None = None, model: str | None = None, device: str = "cpu", timeout_s=300.0):
    """A shown MainWindow (no eps-path precompute) with the study loaded and its first result on screen."""
    import asyncio

    import qasync
    from PySide6.QtWidgets import QApplication

    from app.gui.window import MainWindow
    from app.nets.zoo import DEFAULT_MODEL

    app = QApplication.instance() or QApplication([])
    try:
        loop = asyncio.get_event_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, qasync.QEventLoop):
        asyncio.set_event_loop(qasync.QEventLoop(app))
    win = MainWindow(device=device, precompute_eps_grid=False)
    win.show()
    shown = []
    win.result_shown.connect(shown.append)
    if not win.set_model(model or DEFAULT_MODEL):
        raise RuntimeError(win.state.message)
    win.open_path(study, mask)
    if not process_until(lambda: bool(shown) and win.worker.is_idle(), timeout_s):
        raise TimeoutError("no result from the viewer")
    return win
