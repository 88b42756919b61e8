"""The main window: renders what :class:`app.viewer.controller.ViewerController` decides and forwards what the
user does to it. No policy lives here (what to compute, cache, show or save is the controller's).

Extension points for other views (docks, dialogs):

* ``window.ctl`` -- the controller: call its methods, subscribe to ``ctl.events.<name>`` and ``state.events.<field>``
  (docs/viewer.md lists them);
* ``window.add_action(menu, text, slot, shortcut=None, help=None)`` -- a menu entry (menus are built in
  :meth:`MainWindow._build_menus` only; a new menu name creates the menu before Help), listed under F1 with ``help``;
* ``window.add_dock(widget, title, area)`` -- a dock widget, with a toggle in View > Panels.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from app.errors import MatchGenError
from app.figure import write_figure2
from app.gui import pacs_dialog
from app.gui.controls import ControlPanel
from app.gui.panels import FourPanels
from app.gui.worker import Invoker, SolveWorker
from app.viewer.controller import MAX_RECENT, Shown, ViewerController
from app.viewer.jobs import ExecutorLane
from app.viewer.state import PRESET_NAMES, ViewerState

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
    ("B", "toggle the brain-mask outline"),
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

#: menus in menu-bar order; add_action() with another name adds a menu before Help
MENUS = ("&File", "&View", "&Run", "&Help")

__all__ = ["MAX_RECENT", "SHORTCUTS", "MainWindow", "QSettingsStore", "settings"]


def settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "MatchGen", "viewer")


class QSettingsStore:
    """The controller's recent-files store, kept in ``~/.config/MatchGen/viewer.ini``."""

    key = "recent"

    def load(self) -> list[str]:
        v = settings().value(self.key, []) or []
        return [v] if isinstance(v, str) else list(v)

    def save(self, items: list[str]) -> None:
        settings().setValue(self.key, list(items))


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
        prefetch_slices: bool | None = None,
        exit_on_error: bool = False,
    ):
        super().__init__()
        self.state = state or ViewerState()
        self.device = device
        self.exit_on_error = exit_on_error  # headless (--screenshot): an error ends the app with code 2
        self.exit_code = 0
        self.setWindowTitle("MatchGen Viewer")
        self.resize(1280, 860)
        self.setAcceptDrops(True)

        # the lanes: QThreads for the solver jobs, a plain thread for reading studies (joined at exit, not aborted)
        self.worker = SolveWorker("slice")
        self.vworker = SolveWorker("volume")
        self.eworker = SolveWorker("export")
        self.invoker = Invoker(self)  # runs a callable on the GUI thread (for lanes on plain threads, extensions too)
        self.loader = ExecutorLane("study-loader", self.invoker.post)
        self.ctl = ViewerController(
            self.state,
            lanes={"slice": self.worker, "volume": self.vworker, "export": self.eworker, "load": self.loader},
            device=device,
            recent_store=QSettingsStore(),
            precompute_eps_grid=precompute_eps_grid,
            # the neighbouring slices solved ahead: background work like the eps grid, so by default on with it
            prefetch_slices=precompute_eps_grid if prefetch_slices is None else prefetch_slices,
            figure_writer=write_figure2,
        )

        self.panels = FourPanels()
        self.controls = ControlPanel(self.state, eps_steps=self.ctl.eps_steps)
        # the warning banner: one line per warning of the current study and model, hidden when there is none
        self.banner = QLabel("")
        self.banner.setObjectName("warning-banner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background: #7a5200; color: white; font-weight: bold; padding: 4px;")
        self.banner.hide()
        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(2, 2, 2, 2)
        outer.addWidget(self.banner)
        lay = QHBoxLayout()
        lay.addWidget(self.panels, 1)
        lay.addWidget(self.controls)
        outer.addLayout(lay, 1)
        self.setCentralWidget(central)
        self.menus: dict[str, QMenu] = {}
        self._extra_shortcuts: list[tuple[str, str]] = []
        self._build_status()
        self._build_menus()
        self._connect()
        from app.gui.batch_views import install as install_batch_views

        self.batch_views = install_batch_views(self)  # worklist, findings, orthogonal views (docs/batch.md)
        for w in (self.worker, self.vworker, self.eworker):
            w.start()
        self.refresh_model_list()

    # --- what other code reaches through the window -------------------------------------------------------------
    @property
    def session(self):
        return self.ctl.session

    @property
    def cache(self):
        return self.ctl.cache

    @property
    def shown(self):
        return self.ctl.shown

    @property
    def volume(self):
        return self.ctl.volume

    @property
    def precompute_eps_grid(self) -> bool:
        return self.ctl.precompute_eps_grid

    @precompute_eps_grid.setter
    def precompute_eps_grid(self, value: bool) -> None:
        self.ctl.precompute_eps_grid = bool(value)

    @property
    def prefetch_slices(self) -> bool:
        return self.ctl.prefetch_slices

    @prefetch_slices.setter
    def prefetch_slices(self, value: bool) -> None:
        self.ctl.prefetch_slices = bool(value)

    def request(self):
        return self.ctl.request()

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
        self._device_text = dev
        self.busy_label = QLabel("")
        self.busy_label.setStyleSheet("color: #c07000; font-weight: bold;")
        sb.addWidget(self.readout, 1)
        sb.addPermanentWidget(self.busy_label)
        sb.addPermanentWidget(self.timing_label)
        sb.addPermanentWidget(self.device_label)

    def _show_search_precision(self, sess) -> None:
        """The device label says when the model's search steps run in float32 instead of its card's bfloat16 (a
        device without bfloat16 arithmetic: app.core.device.search_precision); the note is its tooltip."""
        note = getattr(getattr(sess, "detector", None), "precision_note", None)
        self.device_label.setText(f"{self._device_text}, float32 search" if note else self._device_text)
        self.device_label.setToolTip(note or "")

    def menu(self, name: str) -> QMenu:
        """The menu called ``name`` ("&File", "&View", ... or a new one, placed before Help)."""
        m = self.menus.get(name)
        if m is None:
            m = QMenu(name, self)
            help_menu = self.menus.get("&Help")
            if help_menu is not None:
                self.menuBar().insertMenu(help_menu.menuAction(), m)
            else:
                self.menuBar().addMenu(m)
            self.menus[name] = m
        return m

    def add_action(self, menu: str | QMenu, text: str, slot, shortcut: str | None = None, help: str | None = None):
        """A menu entry (window-wide shortcut); ``help`` lists it under Help > Keyboard shortcuts."""
        m = self.menu(menu) if isinstance(menu, str) else menu
        a = QAction(text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            if help:
                self._extra_shortcuts.append((shortcut, help))
        a.triggered.connect(slot)
        m.addAction(a)
        return a

    def add_dock(self, widget: QWidget, title: str, area=Qt.DockWidgetArea.RightDockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.panels_menu.addAction(dock.toggleViewAction())
        return dock

    def _build_menus(self) -> None:
        st, ctl = self.state, self.ctl
        for name in MENUS:
            self.menu(name)
        act = self.add_action
        act("&File", "&Open study...", self.open_dialog, "Ctrl+O")
        act("&File", "Open &DICOM folder...", self.open_folder_dialog, "Ctrl+D")
        act("&File", "Load &ground truth...", self.open_mask_dialog, "Ctrl+G")
        self.recent_menu = self.menus["&File"].addMenu("&Recent")
        self._rebuild_recent(ctl.recent.items())
        self.menus["&File"].addSeparator()
        act("&File", "&Save mask (NIfTI)...", self.save_mask_dialog, "Ctrl+S")
        act("&File", "&Export view...", self.export_view_dialog, "Ctrl+E")
        self.figure_action = act("&File", "Export &Figure 2...", self.export_figure_dialog, "Ctrl+F")
        pacs_dialog.install(self)  # Open from PACS, Load segmentation, Save as DICOM SEG, Send result, servers
        self.menus["&File"].addSeparator()
        act("&File", "&Quit", self.close, "Ctrl+Q")
        act("&View", "Next slice", lambda: self.step_slice(1), "Up")
        act("&View", "Previous slice", lambda: self.step_slice(-1), "Down")
        act("&View", "Next slice (page)", lambda: self.step_slice(1), "PgUp")
        act("&View", "Previous slice (page)", lambda: self.step_slice(-1), "PgDown")
        act("&View", "First slice", lambda: setattr(st, "slice_index", 0), "Home")
        act("&View", "Last slice", lambda: setattr(st, "slice_index", st.n_slices - 1), "End")
        act("&View", "Toggle +MG", lambda: setattr(st, "use_mg", not st.use_mg), "M")
        act("&View", "Toggle brain mask outline", lambda: setattr(st, "show_brain", not st.show_brain), "B")
        act("&View", "eps down", lambda: ctl.nudge_eps(-1), ",")
        act("&View", "eps up", lambda: ctl.nudge_eps(1), ".")
        act("&View", "tau down", lambda: setattr(st, "tau", st.tau - 0.01), "[")
        act("&View", "tau up", lambda: setattr(st, "tau", st.tau + 0.01), "]")
        act("&View", "Reset zoom", self.panels.reset_zoom, "R")
        self.menus["&View"].addSeparator()
        for name in PRESET_NAMES:
            act("&View", f"Window: {name}", lambda _=False, n=name: st.apply_preset(n))
        self.panels_menu = self.menus["&View"].addMenu("&Panels")
        act("&Run", "Run on whole &volume", self.run_volume, "Ctrl+R")
        act("&Run", "&Cancel volume run", self.cancel_volume, "Esc")
        act("&Help", "&Keyboard shortcuts", self.show_shortcuts, "F1")
        act("&Help", "&About", self.show_about)

    def _connect(self) -> None:
        """Controller and state -> rendering; widgets -> controller."""
        ev, st = self.ctl.events, self.state.events
        ev.result.connect(self._render_result)
        ev.timing.connect(lambda text: self.timing_label.setText(text))
        ev.info.connect(lambda text: self.controls.info_label.setText(text))
        ev.status.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        ev.error.connect(lambda te: self.show_error(*te))
        ev.session.connect(lambda _s: (self.refresh_model_list(), self._render_brain()))
        ev.session.connect(self._show_search_precision)
        ev.warnings.connect(self._render_warnings)
        ev.prepared.connect(lambda _s: self._render_brain())
        ev.study_opened.connect(self.study_loaded.emit)
        ev.recent.connect(self._rebuild_recent)
        ev.loading.connect(lambda p: self._set_busy_text())
        ev.volume_running.connect(self.controls.set_volume_running)
        ev.volume_progress.connect(lambda f: self.controls.progress.setValue(int(round(100 * f))))
        ev.export_running.connect(lambda running: (self.figure_action.setEnabled(not running), self._set_busy_text()))
        st.study.connect(self._render_study)
        st.slice_index.connect(self._render_input)
        st.slice_index.connect(lambda _k: self._render_brain())
        st.show_brain.connect(lambda _b: self._render_brain())
        st.gt.connect(lambda _g: self._render_detection())
        st.tau.connect(lambda _t: self._render_detection())
        st.overlay_opacity.connect(lambda _o: self._render_detection())
        st.window.connect(lambda _w: self.panels.set_levels(self.state.levels))
        st.busy.connect(lambda _b: self._set_busy_text())
        self.worker.busy_changed.connect(lambda b: setattr(self.state, "busy", b))
        self.panels.slice_step.connect(self.step_slice)
        self.panels.window_drag.connect(self.state.drag_window)
        self.panels.hovered.connect(lambda x, y: self.readout.setText(self.ctl.hover(x, y)))
        self.controls.model_chosen.connect(self.set_model)
        self.controls.run_volume.connect(self.run_volume)
        self.controls.cancel_volume.connect(self.cancel_volume)
        self.controls.save_mask.connect(self.save_mask_dialog)

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

    # --- forwarding --------------------------------------------------------------------------------------------
    def open_path(self, path, mask=None) -> int:
        """Load a study (and optionally its mask) without blocking the GUI; returns the load's generation. A batch
        output folder (``view DIR``, File > Open DICOM folder, a recent entry) opens as its worklist, at its most
        abnormal study."""
        from app.viewer.worklist import is_batch_output

        if mask is None and is_batch_output(path):
            return self.batch_views.open_worklist(path, open_top=True)
        return self.ctl.open_study(path, mask)

    def load_mask(self, path) -> bool:
        return self.ctl.load_mask(path)

    def set_model(self, name: str) -> bool:
        ok = self.ctl.set_model(name)
        if not ok:
            self.controls._sync_model(self.session.name if self.session else None)
        return ok

    def refresh_model_list(self) -> None:
        from app.nets.zoo import zoo_names

        self.controls.set_models(zoo_names(), self.state.model_name)

    def step_slice(self, step: int) -> None:
        self.state.slice_index = self.state.slice_index + step

    def run_volume(self) -> int | None:
        return self.ctl.run_volume()

    def cancel_volume(self) -> None:
        self.ctl.cancel_volume()

    def save_mask(self, path: str) -> bool:
        return self.ctl.save_mask(path)

    def export_figure(self, models: list[str], path: str) -> int | None:
        return self.ctl.export_figure(models, path)

    def export_view(self, path: str) -> Path:
        """The four panels as PNG (pixels), SVG (QSvgGenerator) or PDF (QPdfWriter)."""
        from app.gui.export import export_widget

        p = export_widget(self.panels, path)
        self.statusBar().showMessage(f"exported {p}", 8000)
        return p

    def recent_files(self) -> list[str]:
        return self.ctl.recent.items()

    # --- rendering -----------------------------------------------------------------------------------------------
    def _set_busy_text(self) -> None:
        parts = []
        if self.state.busy:
            parts.append("working...")
        if self.ctl.export_job is not None:
            parts.append("exporting...")
        if self.ctl.loading is not None:
            parts.append("loading...")
        self.busy_label.setText(" ".join(parts))

    def _render_warnings(self, lines: list[str]) -> None:
        self.banner.setText("\n".join(f"Warning: {w}" for w in lines))
        self.banner.setToolTip("outside the model's domain or read with problems: results may be meaningless")
        self.banner.setVisible(bool(lines))

    def _render_brain(self) -> None:
        self.panels.set_brain(self.ctl.brain_overlay())

    def _render_study(self, slices) -> None:
        self.panels.set_brain(None)
        self.panels.set_pseudo(None)
        self.panels.set_diff(None, 1.0)
        self.panels.set_overlay(None)
        if slices is None:
            return
        sp = getattr(slices.study, "spacing", (1.0, 1.0, 1.0))
        self.panels.set_spacing(sp[0], sp[1])
        self.panels.set_letters_visible(slices.modality in ("MR", "CT"))
        self.setWindowTitle(f"MatchGen Viewer - {slices.name}")

    def _render_input(self, k: int) -> None:
        sl = self.state.study
        if sl is None:
            return
        self.panels.set_input(sl.raw_slice(k), self.state.levels)
        self.panels.set_title(0, f"Input - {sl.name}, slice {k} of 0-{sl.n_slices - 1}")

    def _render_result(self, shown: Shown) -> None:
        """Put a result on screen. Intermediate results update only the images, not the titles: every Qt call
        from this thread has to win the GIL back from the solver's loop, so fewer calls mean shorter stalls."""
        r = shown.result
        self.panels.set_pseudo(r.s)
        self.panels.set_diff(r.d, max(float(r.d.max()), self.state.tau * 1.25, 1e-3))
        if not shown.final:
            self._render_detection(titles=False)
            return
        what = f"{r.model} +MG eps={r.eps:.3g}" if r.eps > 0 else f"{r.model} (base)"
        sess = self.session
        member = sess.pseudo_normal_from if sess is not None and sess.name == r.model else None
        self.panels.set_title(1, f"Pseudo-normal of {member} - {what}" if member else f"Pseudo-normal - {what}")
        self.panels.set_title(2, f"Difference map D (max {float(r.d.max()):.3f})")
        self._render_detection()
        self.result_shown.emit(r)

    def detection_overlay(self):
        return self.ctl.detection()

    def _render_detection(self, titles: bool = True) -> None:
        rgba, d = self.ctl.detection()
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

    def _rebuild_recent(self, items: list[str]) -> None:
        self.recent_menu.clear()
        for p in items:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, q=p: self.open_path(q))
        self.recent_menu.setEnabled(bool(items))

    # --- dialogs -------------------------------------------------------------------------------------------------
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

    def save_mask_dialog(self) -> None:
        if self.state.study is None:
            self.show_error("Nothing to save", "open a study first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save mask", "mask.nii.gz", "NIfTI (*.nii.gz *.nii)")
        if path:
            self.save_mask(path)

    def export_view_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export view", "view.png", "PNG (*.png);;SVG (*.svg);;PDF (*.pdf)")
        if path:
            try:
                self.export_view(path)
            except (MatchGenError, OSError) as exc:
                self.show_error("Cannot export", str(exc))

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
        return "\n".join(f"{k:<28} {v}" for k, v in (*SHORTCUTS, *self._extra_shortcuts))

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
        """Cancel the workers (the solver stops at its next step) and wait for them; never blocks long. A study
        still being read finishes on its plain thread (joined at exit), its result dropped."""
        self.loader.stop()
        self.batch_views.stop()
        for w in (self.worker, self.vworker, self.eworker):
            w.stop(3000)
        super().closeEvent(ev)
