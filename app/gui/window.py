"""The main window: wires the viewer state, the panels, the controls and the worker threads together.

State changes drive everything: a new slice, eps or +MG submits a job to the slice worker (newest request wins;
results are cached per (model, slice, eps)); a new tau or opacity only re-colours the detection panel in the GUI
thread; studies load through qasync (asyncio inside Qt) on an executor thread, so the window never freezes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QWidget,
)

from app.errors import MatchGenError, OptionError
from app.gui.controls import ControlPanel
from app.gui.panels import FourPanels
from app.gui.worker import JobContext, SolveWorker
from app.viewer.compute import ModelSession, ResultCache, SliceResult
from app.viewer.overlay import detection_overlay
from app.viewer.slices import StudySlices
from app.viewer.state import ViewerState

#: (key, what it does) for the Help menu; the actions below use the same keys
SHORTCUTS = (
    ("Ctrl+O", "open a study (NIfTI, DICOM file, picture)"),
    ("Ctrl+D", "open a DICOM folder"),
    ("Ctrl+G", "load a ground-truth mask"),
    ("Ctrl+S", "save the detection mask of the whole volume (NIfTI)"),
    ("Ctrl+E", "export the current view (PNG, SVG, PDF)"),
    ("Ctrl+F", "export a Figure-2 layout (PNG, PDF, SVG)"),
    ("Up / PgUp / wheel up", "next slice"),
    ("Down / PgDown / wheel down", "previous slice"),
    ("Home / End", "first / last slice"),
    ("M", "toggle +MG (base model vs MatchGen)"),
    (", / .", "eps down / up one step"),
    ("[ / ]", "tau down / up by 0.01"),
    ("R", "reset zoom"),
    ("Ctrl+wheel, left-drag", "zoom, pan (all panels together)"),
    ("right-drag", "window (left/right) and level (up/down)"),
    ("Ctrl+R", "run on the whole volume"),
    ("Esc", "cancel the running whole-volume job"),
    ("F1", "this list"),
    ("Ctrl+Q", "quit"),
)

MAX_RECENT = 8
#: slices per batch in the whole-volume run: small enough for a progress bar that moves, big enough to batch
VOLUME_BATCH = 16


def settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "MatchGen", "viewer")


class MainWindow(QMainWindow):
    #: emitted once a final result of the current request is on screen (screenshots and tests wait for it)
    result_shown = Signal(object)
    #: emitted after every detection repaint request (tau/opacity/result); carries the slice Dice or None
    detection_updated = Signal(object)
    study_loaded = Signal(object)
    error_shown = Signal(str)

    def __init__(
        self,
        state: ViewerState | None = None,
        *,
        device: str = "auto",
        precompute_eps_grid: bool = True,
        exit_on_error: bool = False,
    ):
        super().__init__()
        self.state = state or ViewerState()
        self.device = device
        self.precompute_eps_grid = precompute_eps_grid
        self.exit_on_error = exit_on_error  # headless (--screenshot): an error ends the app with code 2
        self.exit_code = 0
        self.cache = ResultCache()
        self.session: ModelSession | None = None
        self.shown: SliceResult | None = None
        self._want: tuple | None = None
        self.volume: tuple | None = None  # (model, eps, d (X, Y, Z))
        self._pending_save: str | None = None
        self._t_request = 0.0
        self._loads: list = []
        self.setWindowTitle("MatchGen Viewer")
        self.resize(1280, 860)
        self.setAcceptDrops(True)

        self.panels = FourPanels()
        self.controls = ControlPanel(self.state)
        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.panels, 1)
        lay.addWidget(self.controls)
        self.setCentralWidget(central)
        self._build_status()
        self._build_menus()

        self.worker = SolveWorker("slice")
        self.worker.report.connect(self._on_report)
        self.worker.failed.connect(self._on_failed)
        self.worker.busy_changed.connect(self._on_busy)
        self.worker.start()
        self.vworker = SolveWorker("volume")
        self.vworker.report.connect(self._on_volume_report)
        self.vworker.failed.connect(self._on_volume_failed)
        self.vworker.start()
        from concurrent.futures import ThreadPoolExecutor

        # a plain thread (not a QThread): one still reading a study at exit is joined, not aborted
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-loader")

        ev = self.state.events
        ev.study.connect(self._on_study)
        ev.gt.connect(lambda _g: self._update_detection())
        ev.slice_index.connect(self._on_slice)
        ev.eps.connect(lambda _e: self.request())
        ev.use_mg.connect(lambda _b: self.request())
        ev.tau.connect(lambda _t: self._update_detection())
        ev.overlay_opacity.connect(lambda _o: self._update_detection())
        ev.window.connect(lambda _w: self.panels.set_levels(self.state.levels))
        ev.busy.connect(lambda b: self.busy_label.setText("working..." if b else ""))
        self.panels.slice_step.connect(self.step_slice)
        self.panels.window_drag.connect(self.state.drag_window)
        self.panels.hovered.connect(self._on_hover)
        self.controls.model_chosen.connect(self.set_model)
        self.controls.run_volume.connect(self.run_volume)
        self.controls.cancel_volume.connect(self.cancel_volume)
        self.controls.save_mask.connect(self.save_mask_dialog)
        self.refresh_model_list()

    # --- construction ----------------------------------------------------------------------------------------
    def _build_status(self) -> None:
        from app.core.device import describe_device, resolve_device

        sb = self.statusBar()
        self.readout = QLabel("")
        self.timing_label = QLabel("")
        try:
            dev = describe_device(resolve_device(self.device))
        except MatchGenError as exc:
            dev = f"device: {exc}"
        self.device_label = QLabel(dev)
        self.busy_label = QLabel("")
        self.busy_label.setStyleSheet("color: #c07000; font-weight: bold;")
        sb.addWidget(self.readout, 1)
        sb.addPermanentWidget(self.busy_label)
        sb.addPermanentWidget(self.timing_label)
        sb.addPermanentWidget(self.device_label)

    def _action(self, menu, text: str, slot, shortcut: str | None = None) -> QAction:
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.triggered.connect(slot)
        menu.addAction(a)
        return a

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        self._action(m, "&Open study...", self.open_dialog, "Ctrl+O")
        self._action(m, "Open &DICOM folder...", self.open_folder_dialog, "Ctrl+D")
        self._action(m, "Load &ground truth...", self.open_mask_dialog, "Ctrl+G")
        self.recent_menu = m.addMenu("&Recent")
        self._rebuild_recent()
        m.addSeparator()
        self._action(m, "&Save mask (NIfTI)...", self.save_mask_dialog, "Ctrl+S")
        self._action(m, "&Export view...", self.export_view_dialog, "Ctrl+E")
        self._action(m, "Export &Figure 2...", self.export_figure_dialog, "Ctrl+F")
        m.addSeparator()
        self._action(m, "&Quit", self.close, "Ctrl+Q")
        m = mb.addMenu("&View")
        self._action(m, "Next slice", lambda: self.step_slice(1), "Up")
        self._action(m, "Previous slice", lambda: self.step_slice(-1), "Down")
        self._action(m, "Next slice (page)", lambda: self.step_slice(1), "PgUp")
        self._action(m, "Previous slice (page)", lambda: self.step_slice(-1), "PgDown")
        self._action(m, "First slice", lambda: setattr(self.state, "slice_index", 0), "Home")
        self._action(m, "Last slice", lambda: setattr(self.state, "slice_index", self.state.n_slices - 1), "End")
        self._action(m, "Toggle +MG", lambda: setattr(self.state, "use_mg", not self.state.use_mg), "M")
        self._action(m, "eps down", lambda: self._nudge_eps(-1), ",")
        self._action(m, "eps up", lambda: self._nudge_eps(1), ".")
        self._action(m, "tau down", lambda: setattr(self.state, "tau", self.state.tau - 0.01), "[")
        self._action(m, "tau up", lambda: setattr(self.state, "tau", self.state.tau + 0.01), "]")
        self._action(m, "Reset zoom", self.panels.reset_zoom, "R")
        m.addSeparator()
        from app.viewer.state import PRESET_NAMES

        for name in PRESET_NAMES:
            self._action(m, f"Window: {name}", lambda _=False, n=name: self.state.apply_preset(n))
        m = mb.addMenu("&Run")
        self._action(m, "Run on whole &volume", self.run_volume, "Ctrl+R")
        self._action(m, "&Cancel volume run", self.cancel_volume, "Esc")
        m = mb.addMenu("&Help")
        self._action(m, "&Keyboard shortcuts", self.show_shortcuts, "F1")
        self._action(m, "&About", self.show_about)

    # --- errors ----------------------------------------------------------------------------------------------
    def show_error(self, title: str, message: str) -> None:
        self.error_shown.emit(message)
        self.state.message = message
        self.statusBar().showMessage(f"{title}: {message.splitlines()[0]}", 10000)
        if self.exit_on_error:
            sys.stderr.write(f"matchgen view: error: {message.splitlines()[0]}\n")
            self.exit_code = 2
            QTimer.singleShot(0, self.close)
            return
        QMessageBox.critical(self, title, message)

    # --- studies ---------------------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self,
            "Open study",
            "",
            "Studies (*.nii *.nii.gz *.mgz *.dcm *.png *.jpg *.jpeg *.tif *.tiff);;All files (*)",
        )
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.open_path(path)

    def open_mask_dialog(self) -> None:
        if self.state.study is None:
            self.show_error("No study", "open a study before its ground-truth mask")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load ground truth", "", "Masks (*.nii *.nii.gz *.png)")
        if path:
            self.load_mask(path)

    def open_path(self, path: str | os.PathLike, mask: str | os.PathLike | None = None):
        """Load a study (and optionally its mask) without blocking the GUI; returns the asyncio task (or None
        when no qasync loop runs, in which case it loads synchronously)."""
        from app.viewer.loading import open_study

        self.statusBar().showMessage(f"Loading {Path(path).name}...")
        self.state.busy = True

        async def load():
            loop = asyncio.get_event_loop()
            t0 = time.perf_counter()
            try:
                slices = await loop.run_in_executor(self._executor, open_study, path, mask)
            except MatchGenError as exc:
                self.state.busy = False
                self.show_error("Cannot open study", str(exc))
                return False
            except Exception as exc:  # noqa: BLE001 - a loader bug must not take the window down
                self.state.busy = False
                self.show_error("Cannot open study", f"{Path(path).name}: {type(exc).__name__}: {exc}")
                return False
            self.state.busy = False
            self._set_study(slices, path, time.perf_counter() - t0)
            return True

        loop = _qasync_loop()
        if loop is None:
            return asyncio.run(load())
        task = asyncio.ensure_future(load(), loop=loop)
        self._loads.append(task)
        task.add_done_callback(lambda t: self._loads.remove(t) if t in self._loads else None)
        return task

    def _set_study(self, slices: StudySlices, path, seconds: float) -> None:
        self._add_recent(str(path))
        self.volume = None
        self.state.study = slices
        for w in slices.study.warnings if hasattr(slices.study, "warnings") else []:
            self.statusBar().showMessage(w, 8000)
        self.timing_label.setText(f"loaded in {seconds:.2f} s")
        self.statusBar().showMessage(f"opened {slices.name} ({slices.modality}, {slices.n_slices} slices)", 5000)
        self.study_loaded.emit(slices)

    def load_mask(self, path) -> bool:
        from app.viewer.loading import open_mask

        try:
            gt = open_mask(path, self.state.study)
        except MatchGenError as exc:
            self.show_error("Cannot load ground truth", str(exc))
            return False
        self.state.study.gt = gt
        self.state.gt = gt
        return True

    def _on_study(self, slices: StudySlices | None) -> None:
        self.cache.clear()
        self.shown = None
        self.panels.set_pseudo(None)
        self.panels.set_diff(None, 1.0)
        self.panels.set_overlay(None)
        if slices is None:
            return
        self.state.gt = slices.gt
        self.state.window = slices.default_window()
        sp = getattr(slices.study, "spacing", (1.0, 1.0, 1.0))
        self.panels.set_spacing(sp[0], sp[1])
        self.panels.set_letters_visible(slices.modality in ("MR", "CT"))
        self.setWindowTitle(f"MatchGen Viewer - {slices.name}")
        if self.session is not None:
            try:
                self.session = self.session.bind(slices)
            except MatchGenError as exc:
                self.session = None
                self.show_error("Study does not fit the model", str(exc))
        elif self.state.model_name is not None:
            self.set_model(self.state.model_name)
        self._on_slice(self.state.slice_index)

    def _on_slice(self, k: int) -> None:
        sl = self.state.study
        if sl is None:
            return
        self.panels.set_input(sl.raw_slice(k), self.state.levels)
        self.panels.set_title(0, f"Input - {sl.name}, slice {k} of 0-{sl.n_slices - 1}")
        self.request()

    def step_slice(self, step: int) -> None:
        self.state.slice_index = self.state.slice_index + step

    def _nudge_eps(self, step: int) -> None:
        self.state.eps = self.state.eps + step * self.controls.eps.step_size

    # --- models ----------------------------------------------------------------------------------------------
    def refresh_model_list(self) -> None:
        from app.nets.zoo import list_models

        self.controls.set_models(list_models(), self.state.model_name)

    def set_model(self, name: str) -> bool:
        """Load a model from the zoo (or a checkpoint path); its card sets the eps range, eps and tau."""
        try:
            sess = ModelSession.load(name, None, self.device)
            if self.state.study is not None:
                sess = sess.bind(self.state.study)
        except MatchGenError as exc:
            self.show_error("Cannot use model", str(exc))
            self.controls._sync_model(self.session.name if self.session else None)
            return False
        self.worker.cancel()
        self.session = sess
        self.cache.clear()
        self.volume = None
        ch = sess.choices
        self.state.eps_max = ch["eps_max"]
        self.state.eps = ch["eps"]
        self.state.tau = ch["tau"]
        self.state.model_name = name
        self.refresh_model_list()
        self.request()
        return True

    # --- the slice worker ------------------------------------------------------------------------------------
    def request(self) -> int | None:
        """Show the current (slice, eps, +MG) from the cache, or ask the worker for it (newest request wins)."""
        sess, sl = self.session, self.state.study
        if sess is None or sess.slices is None or sl is None:
            return None
        k = self.state.slice_index
        mg = self.state.use_mg
        eps = self.state.eps if mg else 0.0
        self._want = ResultCache.key(sess.name, k, eps)
        base = self.cache.get(sess.name, k, 0.0)
        hit = self.cache.get(sess.name, k, eps)
        if hit is not None:
            self._show(hit, final=True)
        elif base is not None:
            self._show(base, final=False, note="+MG running...")
        have = {round(r.eps, 4) for r in [self.cache.get(sess.name, k, e) for e in self._grid()] if r is not None}
        grid = [e for e in self._grid() if round(e, 4) not in have] if (mg and self.precompute_eps_grid) else []
        need_base, need_mg = base is None and hit is None, hit is None and eps > 0

        def job(ctx: JobContext) -> None:
            if need_base:
                ctx.emit("final", sess.solve_slice(k, 0.0, should_stop=ctx.should_stop))
            if need_mg:
                # a cold start, as `detect` solves it: what the slider shows for a value it asked for is what the
                # whole-volume run and the command line give
                r = sess.solve_slice(k, eps, should_stop=ctx.should_stop, on_progress=lambda p: ctx.emit("partial", p))
                ctx.emit("final", r)
            if grid:
                ctx.follow_up.append(
                    lambda c: sess.precompute(k, grid, lambda r: c.emit("cached", r), should_stop=c.should_stop)
                )

        if not (need_base or need_mg or grid):
            self.worker.cancel()
            return None
        self._t_request = time.perf_counter()
        return self.worker.submit(job)

    def _grid(self) -> list[float]:
        """eps values to precompute: the card's calibration grid snapped to slider positions where it has one (its
        even steps are slider positions: the slider's 30 steps are a multiple of the zoo's 6), else every slider
        position."""
        card_grid = self.session.eps_grid if self.session is not None else []
        slider = self.controls.eps.grid()
        if card_grid:
            on_slider = [min(slider, key=lambda v, e=e: abs(v - e)) for e in card_grid]
            return sorted({v for v in on_slider if v > 0})  # the grid's fine values near 0 share a position
        return [e for e in slider if e > 0]

    def _on_report(self, gen: int, kind: str, r) -> None:
        if not isinstance(r, SliceResult) or self.session is None or r.model != self.session.name:
            return
        key = ResultCache.key(r.model, r.slice_index, r.eps)
        if kind in ("final", "cached"):
            self.cache.put(r)
            if key == self._want:
                self._show(r, final=True)
            elif kind == "final" and r.eps == 0 and self._want is not None and self._want[:2] == key[:2]:
                sh = self.shown
                if sh is None or sh.slice_index != r.slice_index or sh.model != r.model:
                    self._show(r, final=False, note="+MG running...")  # the new slice's base model, meanwhile
        elif kind == "partial" and gen == self.worker.generation and key == self._want:
            self._show(r, final=False, note=f"converging: step {r.steps}")

    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self.worker.generation:
            self.show_error("Computation failed", message)

    def _on_busy(self, busy: bool) -> None:
        self.state.busy = busy

    # --- showing results -------------------------------------------------------------------------------------
    def _show(self, r: SliceResult, final: bool, note: str = "") -> None:
        """Put a result on screen. Intermediate results (``final=False``) update only the images, not the titles:
        every Qt call from this thread has to win the GIL back from the solver's loop, so fewer calls mean
        shorter stalls of the event loop while the worker optimises."""
        self.shown = r
        self.panels.set_pseudo(r.s)
        self.panels.set_diff(r.d, max(float(r.d.max()), self.state.tau * 1.25, 1e-3))
        what = f"{r.model} +MG eps={r.eps:.3g}" if r.eps > 0 else f"{r.model} (base)"
        if not final:
            self._update_detection(titles=False)
            self.controls.info_label.setText(f"{what}\n{note}")
            return
        self.panels.set_title(1, f"Pseudo-normal - {what}")
        self.panels.set_title(2, f"Difference map D (max {float(r.d.max()):.3f})")
        self._update_detection()
        elapsed = time.perf_counter() - self._t_request if self._t_request else r.seconds
        self.timing_label.setText(f"solve {r.seconds:.2f} s, {r.steps} steps | shown after {elapsed:.2f} s")
        how = " (precomputed with the eps grid)" if r.precomputed else ""
        self.controls.info_label.setText(f"{what}{how}\nL1 loss {r.loss:.4f}, {r.steps} steps, {r.seconds:.2f} s")
        self.result_shown.emit(r)

    def detection_overlay(self) -> tuple[np.ndarray | None, float | None]:
        """RGBA overlay of the shown result at the current tau and opacity, and the slice Dice (or None)."""
        r, sl = self.shown, self.state.study
        if r is None or sl is None:
            return None, None
        gt = sl.gt_slice(self.state.slice_index)
        return detection_overlay(r.d, self.state.tau, gt, self.state.overlay_opacity)

    def _update_detection(self, titles: bool = True) -> None:
        rgba, d = self.detection_overlay()
        self.panels.set_overlay(rgba)
        if rgba is None or not titles:
            return
        if d is None:
            self.panels.set_title(3, f"Detection (tau={self.state.tau:.3f})")
            self.controls.dice_label.setText("Dice: n/a")
            self.controls.dice_label.setToolTip("no ground truth loaded (File > Load ground truth)")
        else:
            self.panels.set_title(3, f"Detection - Dice {d:.3f} (tau={self.state.tau:.3f}; TP red, FP blue, FN green)")
            self.controls.dice_label.setText(f"Dice: {d:.3f}")
            self.controls.dice_label.setToolTip("Dice of this slice against the ground truth")
        self.detection_updated.emit(d)

    def _on_hover(self, x: int, y: int) -> None:
        sl = self.state.study
        if x < 0 or sl is None:
            self.readout.setText("")
            return
        k = self.state.slice_index
        raw = sl.raw_slice(k)[x, y]
        parts = [f"voxel ({x}, {y}, {k})", f"input {np.round(raw, 2)}"]
        if self.shown is not None:
            parts.append(f"pseudo-normal {np.round(self.shown.s[x, y], 3)}")
            parts.append(f"D {self.shown.d[x, y]:.3f}")
            parts.append("detected" if self.shown.d[x, y] > self.state.tau else "not detected")
        gt = sl.gt_slice(k)
        if gt is not None:
            parts.append("GT lesion" if gt[x, y] else "GT normal")
        self.readout.setText(" | ".join(parts))

    # --- whole volume, saving, exporting ---------------------------------------------------------------------
    def run_volume(self) -> int | None:
        sess = self.session
        if sess is None or sess.slices is None:
            self.show_error("Nothing to run", "open a study and choose a model first")
            return None
        mg = self.state.use_mg
        eps = self.state.eps if mg else 0.0

        def job(ctx: JobContext) -> None:
            t0 = time.perf_counter()
            results: list[SliceResult] = []
            d = sess.run_volume(
                eps,
                base_only=not mg,
                progress=lambda done, total: ctx.emit("progress", (done, total)),
                should_stop=ctx.should_stop,
                batch_size=VOLUME_BATCH,
                results=results,
            )
            ctx.emit("volume", (sess.name, eps, d, time.perf_counter() - t0, results))

        self.controls.set_volume_running(True)
        self.controls.progress.setValue(0)
        return self.vworker.submit(job)

    def cancel_volume(self) -> None:
        self.vworker.cancel()
        self._pending_save = None
        self.controls.set_volume_running(False)
        self.controls.progress.setValue(0)
        self.statusBar().showMessage("whole-volume run cancelled", 5000)

    def _on_volume_report(self, gen: int, kind: str, payload) -> None:
        if gen != self.vworker.generation:
            return
        if kind == "progress":
            done, total = payload
            self.controls.progress.setValue(int(100 * done / max(total, 1)))
        elif kind == "volume":
            name, eps, d, secs, results = payload
            self.volume = (name, eps, d)
            if self.session is not None and name == self.session.name:
                self.cache.capacity = max(self.cache.capacity, 2 * len(results) + 64)
                for r in results:  # browsing the volume at this eps is now instant
                    self.cache.put(r)
            self.controls.set_volume_running(False)
            self.controls.progress.setValue(100)
            n = d.shape[2]
            self.timing_label.setText(f"volume: {secs:.1f} s ({secs / max(n, 1):.3f} s/slice)")
            if self._pending_save:
                path, self._pending_save = self._pending_save, None
                self.save_mask(path)
        elif kind == "figure":
            self.controls.set_volume_running(False)
            self.statusBar().showMessage(f"wrote {payload}", 8000)

    def _on_volume_failed(self, gen: int, message: str) -> None:
        self.controls.set_volume_running(False)
        self._pending_save = None
        if gen == self.vworker.generation:
            self.show_error("Whole-volume run failed", message)

    def save_mask_dialog(self) -> None:
        if self.state.study is None:
            self.show_error("Nothing to save", "open a study first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", "mask.nii.gz", "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_mask(path)

    def save_mask(self, path: str) -> bool:
        """Save D > tau of the whole volume on the study's original grid; runs the volume first if needed."""
        sess = self.session
        mg = self.state.use_mg
        eps = self.state.eps if mg else 0.0
        if sess is None or self.state.study is None:
            self.show_error("Nothing to save", "open a study and choose a model first")
            return False
        if self.volume is None or self.volume[0] != sess.name or abs(self.volume[1] - eps) > 1e-9:
            self._pending_save = path
            self.run_volume()
            return False
        from app.io import save_mask

        try:
            out = save_mask(self.state.study.study, self.volume[2] > self.state.tau, path)
        except (MatchGenError, OSError) as exc:
            self.show_error("Cannot save mask", str(exc))
            return False
        self.statusBar().showMessage(f"saved {out}", 8000)
        return True

    def export_view_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png);;SVG (*.svg);;PDF (*.pdf)")
        if path:
            try:
                self.export_view(path)
            except (MatchGenError, OSError) as exc:
                self.show_error("Cannot export", str(exc))

    def export_view(self, path: str) -> Path:
        """The four panels as PNG (pixels), SVG (QSvgGenerator) or PDF (QPdfWriter)."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".png", ".svg", ".pdf"):
            raise OptionError(f"{p.name}: export as .png, .svg or .pdf")
        from app.figure.output import atomic_output

        with atomic_output(p) as tmp:
            if suffix == ".png":
                if not self.panels.grab().save(tmp, "PNG"):
                    raise OptionError(f"cannot write {p}")
            else:
                self._render_vector(tmp, suffix)
        self.statusBar().showMessage(f"exported {p}", 8000)
        return p

    def _render_vector(self, path: str, suffix: str) -> None:
        """SVG through QSvgGenerator, PDF through QPdfWriter: the panels drawn as vectors (images embedded)."""
        from PySide6.QtGui import QPageLayout, QPageSize, QPainter, QPdfWriter
        from PySide6.QtSvg import QSvgGenerator

        src = self.panels.rect()
        if suffix == ".svg":
            dev = QSvgGenerator()
            dev.setFileName(path)
            dev.setSize(src.size())
            dev.setViewBox(src)
            dev.setTitle("MatchGen Viewer")
        else:
            dev = QPdfWriter(path)
            dev.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
            dev.setPageOrientation(QPageLayout.Orientation.Landscape)
        painter = QPainter(dev)
        try:
            if suffix == ".pdf":
                target = painter.viewport()
                scale = min(target.width() / src.width(), target.height() / src.height())
                painter.scale(scale, scale)
            self.panels.render(painter)
        finally:
            painter.end()

    def export_figure_dialog(self) -> None:
        if self.session is None or self.state.study is None:
            self.show_error("Nothing to export", "open a study and choose a model first")
            return
        text, ok = QInputDialog.getText(self, "Figure 2", "Models (comma-separated):", text=self.session.name)
        if not ok:
            return
        path, _ = QFileDialog.getSaveFileName(
            self, "Export Figure 2", "figure2.pdf", "PDF (*.pdf);;SVG (*.svg);;PNG (*.png)"
        )
        if path:
            self.export_figure([n.strip() for n in text.split(",") if n.strip()], path)

    def export_figure(self, models: list[str], path: str) -> int:
        """Figure-2 layout of the current slice (the same code as ``python main.py figure``), in the background."""
        from app.figure import case_columns, figure2, save_figure

        sl, k, device = self.state.study, self.state.slice_index, self.device
        eps = None

        def job(ctx: JobContext) -> None:
            sessions = [ModelSession.load(n, sl, device) for n in models or [self.session.name]]
            cols = case_columns(sessions, k, eps=eps)
            fig = figure2(sessions[0].slices, k, cols)
            ctx.emit("figure", str(save_figure(fig, path)))

        self.controls.set_volume_running(True)
        return self.vworker.submit(job)

    # --- recent files, drag and drop ---------------------------------------------------------------------------
    def _add_recent(self, path: str) -> None:
        s = settings()
        items = [p for p in (s.value("recent", []) or []) if p != path]
        if isinstance(items, str):
            items = [items]
        s.setValue("recent", [path, *items][:MAX_RECENT])
        self._rebuild_recent()

    def recent_files(self) -> list[str]:
        v = settings().value("recent", []) or []
        return [v] if isinstance(v, str) else list(v)

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        for p in self.recent_files():
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, q=p: self.open_path(q))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def dragEnterEvent(self, ev):  # noqa: N802 - Qt naming
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802 - Qt naming
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            ev.acceptProposedAction()
            self.open_path(urls[0])

    # --- help ----------------------------------------------------------------------------------------------------
    def shortcuts_text(self) -> str:
        return "\n".join(f"{k:<28} {v}" for k, v in SHORTCUTS)

    def show_shortcuts(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText("<pre>" + self.shortcuts_text() + "</pre>")
        box.exec()

    def show_about(self) -> None:
        from app import __version__

        QMessageBox.about(
            self,
            "About MatchGen Viewer",
            f"MatchGen Viewer {__version__}\nUnsupervised anomaly detection with test-time matched pseudo-normal "
            "images (MatchGen). Research software, not a medical device.",
        )

    # --- shutdown ------------------------------------------------------------------------------------------------
    def closeEvent(self, ev):  # noqa: N802 - Qt naming
        """Cancel the workers (the solver stops at its next step) and wait for them; never blocks long."""
        for t in list(self._loads):
            t.cancel()
        self.worker.stop(3000)
        self.vworker.stop(3000)
        self._executor.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(ev)


def _qasync_loop():
    """The running qasync loop, if the app runs inside one (``run_viewer`` and the tests set it up)."""
    try:
        import qasync

        loop = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return None
    return loop if isinstance(loop, qasync.QEventLoop) and not loop.is_closed() else None
