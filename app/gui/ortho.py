"""Orthogonal views: coronal and sagittal reformats of the input, the difference map and the detection of a volume
result (rows: coronal, sagittal; columns: input, D, detection), with a crosshair linked to the axial view.

Only display: the planes and the cursor arithmetic come from :mod:`app.viewer.ortho`. A left click in any panel
emits :attr:`OrthoViews.cursor_moved` with the new voxel (x, y, z); the window moves the axial slice and its
crosshair there, and calls :meth:`OrthoViews.set_cursor` when the mouse moves over the axial panels.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QTransform
from PySide6.QtWidgets import QGraphicsSimpleTextItem

from app.viewer.ortho import LETTERS, Cursor, move_in_plane, plane, plane_spacing, point_in_plane, screen_to_voxel
from app.viewer.slices import to_pyqtgraph

ROWS = ("coronal", "sagittal")
COLS = ("Input", "Difference D", "Detection")
CROSS_RGB = (255, 220, 0)


class OrthoViews(pg.GraphicsLayoutWidget):
    #: (x, y, z): a voxel chosen by a click in a coronal or sagittal panel
    cursor_moved = Signal(int, int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("k")
        self.raw: np.ndarray | None = None
        self.source: np.ndarray | None = None
        self.d: np.ndarray | None = None
        self.mask: np.ndarray | None = None
        self.spacing = (1.0, 1.0, 1.0)
        self.levels = (0.0, 1.0)
        self.dmax = 1.0
        self.cursor: Cursor | None = None
        self.views: dict[tuple[str, int], pg.ViewBox] = {}
        self.images: dict[tuple[str, int], pg.ImageItem] = {}
        self.under: dict[str, pg.ImageItem] = {}
        self.cross: dict[tuple[str, int], tuple[pg.InfiniteLine, pg.InfiniteLine]] = {}
        self.titles: dict[tuple[str, int], pg.LabelItem] = {}
        cmap = pg.colormap.get("inferno")
        pen = pg.mkPen((*CROSS_RGB, 255), width=1)
        for r, name in enumerate(ROWS):
            for c, col in enumerate(COLS):
                cell = self.ci.addLayout(row=r, col=c)
                self.titles[(name, c)] = cell.addLabel(f"{col} - {name}", row=0, col=0, color="w", size="9pt")
                vb = pg.ViewBox(lockAspect=True, invertY=False, enableMenu=False)
                cell.addItem(vb, row=1, col=0)
                if c == 2:
                    under = pg.ImageItem()
                    vb.addItem(under)
                    self.under[name] = under
                img = pg.ImageItem()
                img.setZValue(5)
                if c == 1:
                    img.setColorMap(cmap)
                vb.addItem(img)
                v = pg.InfiniteLine(angle=90, movable=False, pen=pen)
                h = pg.InfiniteLine(angle=0, movable=False, pen=pen)
                for line in (v, h):
                    line.setZValue(20)
                    vb.addItem(line, ignoreBounds=True)
                    line.hide()
                self.views[(name, c)] = vb
                self.images[(name, c)] = img
                self.cross[(name, c)] = (v, h)
                self._letters(vb, LETTERS[name])
        first = self.views[(ROWS[0], 0)]
        for (name, c), vb in self.views.items():
            if c and name == ROWS[0]:
                vb.setXLink(first)
                vb.setYLink(first)
        s0 = self.views[(ROWS[1], 0)]
        for c in (1, 2):
            self.views[(ROWS[1], c)].setXLink(s0)
            self.views[(ROWS[1], c)].setYLink(s0)
        self.scene().sigMouseClicked.connect(self._clicked)

    def _letters(self, vb, letters) -> None:
        items = []
        for letter in letters:
            t = QGraphicsSimpleTextItem(letter, vb)
            t.setBrush(QBrush(QColor(255, 210, 0)))
            f = QFont()
            f.setPointSize(9)
            f.setBold(True)
            t.setFont(f)
            items.append(t)

        def place(_vb=None):
            r = vb.rect()
            left, right, top, bottom = items
            left.setPos(QPointF(r.left() + 3, r.center().y() - 8))
            right.setPos(QPointF(r.right() - 12, r.center().y() - 8))
            top.setPos(QPointF(r.center().x() - 4, r.top() + 2))
            bottom.setPos(QPointF(r.center().x() - 4, r.bottom() - 18))

        vb.sigResized.connect(place)

    # --- data ---------------------------------------------------------------------------------------------------
    def set_volumes(
        self,
        raw: np.ndarray | None,
        d: np.ndarray | None,
        mask: np.ndarray | None,
        spacing=(1.0, 1.0, 1.0),
        levels: tuple[float, float] | None = None,
    ) -> None:
        """The study (X, Y, Z[, 3]) in raw units, its difference map and detection on the same grid (None when
        there is no volume result yet)."""
        self.source = raw  # what was given (the views compare it to know whether the study changed)
        self.raw = None if raw is None else (raw.mean(axis=3) if raw.ndim == 4 else raw)
        self.d, self.mask = d, mask
        self.spacing = tuple(float(s) or 1.0 for s in spacing)
        if levels is None and self.raw is not None:
            lo, hi = np.percentile(self.raw, [0.5, 99.5])
            levels = (float(lo), float(hi) if hi > lo else float(lo) + 1.0)
        self.levels = levels or (0.0, 1.0)
        self.dmax = max(float(d.max()), 1e-6) if d is not None and d.size else 1.0
        for name in ROWS:
            sx, sy = plane_spacing(name, self.spacing)
            for c in range(3):
                self.images[(name, c)].setTransform(QTransform.fromScale(sx, sy))
            self.under[name].setTransform(QTransform.fromScale(sx, sy))
        for c, col in enumerate(COLS):
            missing = (c == 1 and d is None) or (c == 2 and mask is None)
            for name in ROWS:
                note = " (run the whole volume, Ctrl+R)" if missing else ""
                self.titles[(name, c)].setText(f"{col} - {name}{note}")
        if self.raw is not None:
            shape = self.raw.shape
            self.cursor = (self.cursor or Cursor(shape[0] // 2, shape[1] // 2, shape[2] // 2)).clamp(shape)
            self._render()
            for vb in self.views.values():
                vb.autoRange(padding=0.02)
        else:
            for img in list(self.images.values()) + list(self.under.values()):
                img.clear()

    def set_maps(self, d: np.ndarray | None, mask: np.ndarray | None) -> None:
        """New D / detection for the same study (a volume run finished, tau moved)."""
        self.d, self.mask = d, mask
        self.dmax = max(float(d.max()), 1e-6) if d is not None and d.size else 1.0
        for c, col in enumerate(COLS):
            missing = (c == 1 and d is None) or (c == 2 and mask is None)
            for name in ROWS:
                self.titles[(name, c)].setText(
                    f"{col} - {name}" + (" (run the whole volume, Ctrl+R)" if missing else "")
                )
        self._render()

    def set_levels(self, levels: tuple[float, float]) -> None:
        self.levels = levels
        self._render()

    def set_cursor(self, x: int, y: int, z: int) -> None:
        if self.raw is None:
            return
        new = Cursor(x, y, z).clamp(self.raw.shape)
        if new == self.cursor:
            return
        self.cursor = new
        self._render()

    # --- drawing ------------------------------------------------------------------------------------------------
    def _render(self) -> None:
        if self.raw is None or self.cursor is None:
            return
        cur = self.cursor
        for name in ROWS:
            raw = plane(self.raw, name, cur)
            img = to_pyqtgraph(raw)
            self.images[(name, 0)].setImage(img, autoLevels=False, levels=self.levels)
            self.under[name].setImage(img, autoLevels=False, levels=self.levels)
            if self.d is not None:
                self.images[(name, 1)].setImage(to_pyqtgraph(plane(self.d, name, cur)), autoLevels=False)
                self.images[(name, 1)].setLevels((0.0, self.dmax))
            else:
                self.images[(name, 1)].clear()
            if self.mask is not None:
                m = plane(self.mask, name, cur)
                rgba = np.zeros((*m.shape, 4), np.uint8)
                rgba[m] = (255, 40, 30, 150)
                self.images[(name, 2)].setImage(to_pyqtgraph(rgba), autoLevels=False, levels=(0, 255))
            else:
                self.images[(name, 2)].clear()
            h, v = point_in_plane(name, cur)
            n_h = raw.shape[0]
            sx, sy = plane_spacing(name, self.spacing)
            for c in range(3):
                vl, hl = self.cross[(name, c)]
                vl.setPos((n_h - 1 - h + 0.5) * sx)
                hl.setPos((v + 0.5) * sy)
                vl.show()
                hl.show()

    def cross_position(self, name: str) -> tuple[float, float]:
        """The crosshair's (vertical line x, horizontal line y) in view coordinates of ``name``'s input panel."""
        vl, hl = self.cross[(name, 0)]
        return float(vl.value()), float(hl.value())

    # --- clicks -------------------------------------------------------------------------------------------------
    def _clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or self.raw is None or self.cursor is None:
            return
        pos = ev.scenePos()
        for (name, _c), vb in self.views.items():
            if vb.sceneBoundingRect().contains(pos):
                self.click_at(name, vb.mapSceneToView(pos))
                ev.accept()
                return

    def click_at(self, name: str, p: QPointF) -> None:
        sx, sy = plane_spacing(name, self.spacing)
        shape2 = plane(self.raw, name, self.cursor).shape
        ix, iy = int(np.floor(p.x() / sx)), int(np.floor(p.y() / sy))
        if not (0 <= ix < shape2[0] and 0 <= iy < shape2[1]):
            return
        h, v = screen_to_voxel(ix, iy, shape2[0])
        self.cursor = move_in_plane(name, self.cursor, h, v).clamp(self.raw.shape)
        self._render()
        self.cursor_moved.emit(*self.cursor.as_tuple())
