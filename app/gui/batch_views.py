"""The batch views in the main window: File > Open worklist (a ``batch`` output folder) with a ranked worklist dock
(double-click or Enter opens a study at its most abnormal slice with its saved result; N / P: next / previous
study; F5 reads the folder again, as a timer does every minute while the batch has not finished), a findings dock
(click: jump to the finding's centre slice, outlined in cyan), and orthogonal views (View > Orthogonal views, O:
coronal and sagittal reformats of input, D and detection, crosshair linked with the axial panels). Installed by
the window through its extension points (``add_action``, ``add_dock``, ``ctl``, ``invoker``); the behaviour is
:class:`app.viewer.worklist_session.WorklistSession`'s, this module only shows and asks."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFileDialog

from app.errors import MatchGenError
from app.gui.findings_dock import FindingsPanel
from app.gui.ortho import OrthoViews
from app.gui.worklist_dock import WorklistPanel
from app.viewer.findings import outline_into
from app.viewer.jobs import ExecutorLane
from app.viewer.slices import to_pyqtgraph
from app.viewer.worklist import REFRESH_S
from app.viewer.worklist_session import WorklistSession

OUTLINE_RGBA = (0, 255, 255, 255)


class BatchViews:
    def __init__(self, window):
        self.window = window
        self.ctl = window.ctl
        self.state = window.state
        # the worklist folder is read on a plain thread (one result.json per study), reports back on the GUI thread
        self.reader = ExecutorLane("worklist-reader", window.invoker.post)
        # and the findings of a volume result at a new tau (the whole volume labelled again) on another
        self.findings_worker = ExecutorLane("findings", window.invoker.post)
        self.session = WorklistSession(self.ctl, self.reader, self.findings_worker)
        # while the batch of the open worklist has not finished, the list follows it (the session decides)
        self.refresh_timer = QTimer(window)
        self.refresh_timer.setInterval(int(REFRESH_S * 1000))
        self.refresh_timer.timeout.connect(self.session.refresh)
        self.worklist = WorklistPanel()
        self.findings = FindingsPanel()
        self.ortho = OrthoViews()
        area = Qt.DockWidgetArea
        self.worklist_dock = window.add_dock(self.worklist, "Worklist", area.LeftDockWidgetArea)
        # the findings under the worklist, in one column beside the images: the four panels keep their width
        self.findings_dock = window.add_dock(self.findings, "Findings", area.LeftDockWidgetArea)
        window.splitDockWidget(self.worklist_dock, self.findings_dock, Qt.Orientation.Vertical)
        self.ortho_dock = window.add_dock(self.ortho, "Orthogonal views", area.BottomDockWidgetArea)
        for dock in (self.worklist_dock, self.findings_dock, self.ortho_dock):
            dock.hide()
        self.worklist.title_changed.connect(self.worklist_dock.setWindowTitle)
        self.findings.title_changed.connect(self.findings_dock.setWindowTitle)
        window.add_action("&File", "Open &worklist...", self.open_worklist_dialog, "Ctrl+Shift+O",
                          help="open a batch output folder (ranked worklist)")  # fmt: skip
        window.add_action("&File", "Reload worklist", self.reload_worklist, "F5",
                          help="read the worklist folder again (a batch still running has done more)")  # fmt: skip
        window.add_action(
            "&View", "Next study (worklist)", lambda: self.step(1), "N", help="next study of the worklist"
        )
        window.add_action("&View", "Previous study (worklist)", lambda: self.step(-1), "P",
                          help="previous study of the worklist")  # fmt: skip
        window.add_action("&View", "Orthogonal views", self.toggle_ortho, "O",
                          help="coronal and sagittal views (crosshair linked)")  # fmt: skip
        # the outline of the chosen finding, over the detection panel
        self.outline_item = pg.ImageItem()
        self.outline_item.setZValue(15)
        window.panels.views[3].addItem(self.outline_item)

        self.worklist.open_requested.connect(self.open_entry)
        self.worklist.reload_requested.connect(self.reload_worklist)
        self.session.on_worklist.append(self._worklist_read)
        self.session.on_reading.append(self.worklist.set_reading)
        self.findings.finding_chosen.connect(self.choose_finding)
        self.session.on_findings.append(self._findings_changed)
        self.session.on_opened.append(self._opened)
        self.ortho.cursor_moved.connect(self._ortho_clicked)
        ev, st = self.ctl.events, self.state.events
        ev.volume_done.connect(self._maps_changed)
        cursor = getattr(ev, "cursor", None)
        if cursor is not None:
            cursor.connect(self._axial_cursor)
        st.study.connect(lambda _s: self._refresh_ortho())
        st.tau.connect(self._maps_changed)
        st.slice_index.connect(self._slice_changed)

    # --- worklist -----------------------------------------------------------------------------------------------
    def open_worklist_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.window, "Open worklist (batch output folder)")
        if path:
            self.open_worklist(path)

    def open_worklist(self, path, open_top: bool = False) -> int:
        """Start reading a batch output folder (off the GUI thread); the dock shows the progress, then the list
        (``open_top``: and its most abnormal study opens), or a dialog says why it cannot be read. Returns the
        read's generation."""
        gen = self.session.open_folder(path, open_top=open_top)
        self.worklist_dock.show()
        self.worklist_dock.raise_()
        # a third of the window at most: the images stay the largest thing on screen
        self.window.resizeDocks([self.worklist_dock], [min(420, self.window.width() // 3)], Qt.Orientation.Horizontal)
        return gen

    def reload_worklist(self) -> None:
        if self.session.reload() is None:
            self.window.statusBar().showMessage("no worklist open (File > Open worklist)", 4000)

    def _worklist_read(self, wl) -> None:
        shown = self.worklist.worklist
        bar = self.worklist.table.verticalScrollBar()
        top = bar.value() if shown is not None and shown.folder == wl.folder else None  # a reload stays put
        self.worklist.set_worklist(wl)
        self.worklist_dock.show()
        if wl.current is not None:
            self.worklist.table.selectRow(wl.current)
        if top is not None:
            bar.setValue(top)
        if wl.unfinished:  # as often as its batch writes its lists (Worklist.refresh_s)
            self.refresh_timer.setInterval(int(wl.refresh_s * 1000))
            self.refresh_timer.start()
        else:
            self.refresh_timer.stop()

    def stop(self) -> None:
        """At the window's close: drop a read still waiting (a running one finishes on its thread, unseen)."""
        self.refresh_timer.stop()
        self.reader.stop()
        self.findings_worker.stop()

    def open_entry(self, entry) -> None:
        try:
            self.session.open_entry(entry)
        except MatchGenError as exc:
            self.window.show_error("Cannot open study", str(exc))

    def step(self, delta: int) -> None:
        if self.session.worklist is None:
            return
        if self.worklist.step(delta) is None:
            self.window.statusBar().showMessage("end of the worklist", 4000)

    def _opened(self, entry) -> None:
        self.findings_dock.show()
        wl = self.session.worklist
        if wl is not None and entry in wl.entries:
            self.worklist.table.selectRow(wl.entries.index(entry))
        self._refresh_ortho()

    # --- findings -----------------------------------------------------------------------------------------------
    def _findings_changed(self, fl) -> None:
        self.findings.set_findings(fl)
        if fl is not None:
            self.findings_dock.show()
        self._draw_outline()
        if fl is not None and self.ctl.volume is not None:
            # the findings' labels are the detection as drawn, labelled: the orthogonal views need not compute it
            self._refresh_ortho(findings=fl)

    def _maps_changed(self, _value) -> None:
        """A new volume result or tau: the orthogonal views show its detection when the findings computed off the
        GUI thread arrive (:meth:`_findings_changed`), or at once when none are on their way."""
        if not self.session.findings_pending:
            self._refresh_ortho()

    def choose_finding(self, i: int) -> None:
        f = self.session.choose_finding(i)
        if f is None:
            return
        self._draw_outline()
        sl = self.state.study
        if sl is not None:  # the crosshair on the finding's centre
            x, y = int(round(f.centre_voxel[0])), int(round(f.centre_voxel[1]))
            self._show_axial_cross(x, y)
            self.ortho.set_cursor(x, y, f.centre_slice)

    def _draw_outline(self) -> None:
        k = self.state.slice_index
        ring = self.session.outline(k)
        if ring is None:
            self.outline_item.clear()
            return
        rgba = outline_into(np.zeros((*ring.shape, 4), np.uint8), ring, OUTLINE_RGBA)
        self.outline_item.setTransform(self.window.panels.img_det.transform())
        self.outline_item.setImage(to_pyqtgraph(rgba), autoLevels=False, levels=(0, 255))

    # --- orthogonal views ---------------------------------------------------------------------------------------
    def toggle_ortho(self) -> None:
        if self.ortho_dock.isVisible():
            self.ortho_dock.hide()
            return
        self.ortho_dock.show()
        self._refresh_ortho()

    def _refresh_ortho(self, findings=None) -> None:
        """The planes of the current study, with D and the detection when there is a volume result (a whole-volume
        run at the current tau, or a saved batch result: its own mask); ``findings``: that detection's findings,
        whose labels give it without computing it again."""
        if not self.ortho_dock.isVisible():
            return
        sl = self.state.study
        if sl is None:
            self.ortho.set_volumes(None, None, None)
            return
        vol = self.ctl.volume
        d = vol.d if vol is not None and getattr(vol, "study", None) is sl else None
        if d is None:
            mask = None
        else:
            mask = findings.labels > 0 if findings is not None else self.ctl.volume_detection()
        if self.ortho.source is sl.raw:
            self.ortho.set_maps(d, mask)
            return
        lv = self.state.levels
        self.ortho.set_volumes(sl.raw, d, mask, sl.study.spacing, (float(lv[0]), float(lv[1])))
        self.ortho.set_cursor(sl.raw.shape[0] // 2, sl.raw.shape[1] // 2, self.state.slice_index)

    def _axial_cursor(self, xyz) -> None:
        if xyz is not None and self.ortho_dock.isVisible():
            self.ortho.set_cursor(*xyz)

    def _ortho_clicked(self, x: int, y: int, z: int) -> None:
        if self.state.slice_index != z:
            self.state.slice_index = z
        self._show_axial_cross(x, y)

    def _show_axial_cross(self, x: int, y: int) -> None:
        sl = self.state.study
        if sl is None:
            return
        nx = sl.slice_shape[0]
        self.window.panels.show_cross(nx - 1 - x, y)

    def _slice_changed(self, k: int) -> None:
        self._draw_outline()
        c = self.ortho.cursor
        if c is not None and self.ortho_dock.isVisible():
            self.ortho.set_cursor(c.x, c.y, k)


def install(window) -> BatchViews:
    return BatchViews(window)
