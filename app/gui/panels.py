"""The four linked panels in one pyqtgraph GraphicsLayoutWidget: input, pseudo-normal, difference (colour map
and colour bar), detection overlaid on the input. Synced zoom/pan (X/Y links), a crosshair across all panels,
radiological orientation letters; the mouse wheel steps slices (Ctrl+wheel zooms), right-drag sets
window/level. Only display here: the window decides what to show."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QTransform
from PySide6.QtWidgets import QGraphicsSimpleTextItem

from app.viewer.slices import ORIENTATION_LETTERS, from_pyqtgraph_xy, to_pyqtgraph

PANEL_NAMES = ("Input", "Pseudo-normal", "Difference map D", "Detection")
DIFF_COLORMAP = "inferno"


class SliceViewBox(pg.ViewBox):
    """A ViewBox whose wheel steps slices (Ctrl+wheel zooms) and whose right-drag sets window/level."""

    def __init__(self, owner: FourPanels):
        super().__init__(lockAspect=True, invertY=False, enableMenu=False)
        self._owner = owner

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        if delta:
            self._owner.slice_step.emit(1 if delta > 0 else -1)
        ev.accept()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.button() == Qt.MouseButton.RightButton:
            ev.accept()
            d = ev.screenPos() - ev.lastScreenPos()
            self._owner.window_drag.emit(float(d.x()), float(d.y()))
            return
        super().mouseDragEvent(ev, axis)


class FourPanels(pg.GraphicsLayoutWidget):
    slice_step = Signal(int)
    window_drag = Signal(float, float)
    #: (x, y) voxel of the slice under the mouse, or (-1, -1) when outside the image
    hovered = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setBackground("k")
        self.setAcceptDrops(False)  # the main window takes drops
        self.titles: list[pg.LabelItem] = []
        self.views: list[SliceViewBox] = []
        self.colorbar: pg.ColorBarItem | None = None
        self._shape: tuple[int, int] | None = None
        self._spacing: tuple[float, float] = (1.0, 1.0)  # mm per pixel along X and Y: physical aspect
        for i, name in enumerate(PANEL_NAMES):
            cell = self.ci.addLayout(row=i // 2, col=i % 2)
            title = cell.addLabel(name, row=0, col=0, colspan=2, color="w", size="10pt")
            vb = SliceViewBox(self)
            cell.addItem(vb, row=1, col=0)
            self.titles.append(title)
            self.views.append(vb)
            if i == 2:
                self._diff_cell = cell
        for vb in self.views[1:]:
            vb.setXLink(self.views[0])
            vb.setYLink(self.views[0])

        self.img_input = pg.ImageItem()
        self.img_pseudo = pg.ImageItem()
        self.img_diff = pg.ImageItem()
        self.img_det_under = pg.ImageItem()
        self.img_det = pg.ImageItem()
        self.img_det.setZValue(10)
        # the brain mask's outline, one layer per panel (above the images and the detection, below the crosshair)
        self.img_brain = [pg.ImageItem() for _ in PANEL_NAMES]
        for vb, it in zip(self.views, self.img_brain, strict=True):
            it.setZValue(15)
            vb.addItem(it)
        for vb, items in zip(
            self.views,
            ([self.img_input], [self.img_pseudo], [self.img_diff], [self.img_det_under, self.img_det]),
            strict=True,
        ):
            for it in items:
                vb.addItem(it)
        cmap = pg.colormap.get(DIFF_COLORMAP)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=cmap, interactive=False, width=14)
        self.colorbar.setImageItem(self.img_diff)
        self._diff_cell.addItem(self.colorbar, row=1, col=1)

        pen = pg.mkPen((255, 220, 0, 160), width=1, style=Qt.PenStyle.DashLine)
        self.cross: list[tuple[pg.InfiniteLine, pg.InfiniteLine]] = []
        for vb in self.views:
            v = pg.InfiniteLine(angle=90, movable=False, pen=pen)
            h = pg.InfiniteLine(angle=0, movable=False, pen=pen)
            v.setZValue(20)
            h.setZValue(20)
            vb.addItem(v, ignoreBounds=True)
            vb.addItem(h, ignoreBounds=True)
            v.hide()
            h.hide()
            self.cross.append((v, h))
        self._letters: list[list[QGraphicsSimpleTextItem]] = []
        for vb in self.views:
            items = []
            for letter in ORIENTATION_LETTERS:
                t = QGraphicsSimpleTextItem(letter, vb)
                t.setBrush(QBrush(QColor(255, 210, 0)))
                f = QFont()
                f.setPointSize(10)
                f.setBold(True)
                t.setFont(f)
                items.append(t)
            self._letters.append(items)
            vb.sigResized.connect(self._place_letters)
        self.scene().sigMouseMoved.connect(self._mouse_moved)

    # --- display -------------------------------------------------------------------------------------------
    def _place_letters(self, vb) -> None:
        i = self.views.index(vb)
        r = vb.rect()
        left, right, top, bottom = self._letters[i]
        left.setPos(QPointF(r.left() + 3, r.center().y() - 8))
        right.setPos(QPointF(r.right() - 12, r.center().y() - 8))
        top.setPos(QPointF(r.center().x() - 4, r.top() + 2))
        bottom.setPos(QPointF(r.center().x() - 4, r.bottom() - 18))

    def set_spacing(self, sx: float, sy: float) -> None:
        """Pixel size in mm (the slice's in-plane voxel size) so that anisotropic slices keep their shape."""
        sx, sy = (float(sx) or 1.0), (float(sy) or 1.0)
        self._spacing = (sx, sy)
        for it in (self.img_input, self.img_pseudo, self.img_diff, self.img_det_under, self.img_det, *self.img_brain):
            it.setTransform(QTransform.fromScale(sx, sy))
        self._shape = None  # zoom to the new extent with the next image

    def set_letters_visible(self, visible: bool) -> None:
        """Orientation letters mean something for anatomical slices only (not for photographs)."""
        for items in self._letters:
            for t in items:
                t.setVisible(visible)

    def set_input(self, raw: np.ndarray, levels: tuple[float, float]) -> None:
        """The study slice (X, Y[, 3]) in raw units; shown in the input and under the detection."""
        img = to_pyqtgraph(raw)
        new_shape = raw.shape[:2]
        rgb = raw.ndim == 3
        lv = None if rgb else levels
        self.img_input.setImage(img, autoLevels=False, levels=lv if lv else (0, 255))
        self.img_det_under.setImage(img, autoLevels=False, levels=lv if lv else (0, 255))
        if new_shape != self._shape:
            self._shape = tuple(new_shape)
            self.views[0].autoRange(padding=0.02)

    def set_levels(self, levels: tuple[float, float]) -> None:
        if self.img_input.image is not None and self.img_input.image.ndim == 2:
            self.img_input.setLevels(levels)
            self.img_det_under.setLevels(levels)

    def set_pseudo(self, s: np.ndarray | None) -> None:
        if s is None:
            self.img_pseudo.clear()
            return
        self.img_pseudo.setImage(to_pyqtgraph(np.clip(s, 0, 1)), autoLevels=False, levels=(0.0, 1.0))

    def set_diff(self, d: np.ndarray | None, dmax: float) -> None:
        if d is None:
            self.img_diff.clear()
            return
        self.img_diff.setImage(to_pyqtgraph(d), autoLevels=False)
        self.colorbar.setLevels((0.0, max(float(dmax), 1e-6)))

    def set_overlay(self, rgba: np.ndarray | None) -> None:
        """RGBA uint8 (X, Y, 4) drawn over the input in the detection panel."""
        if rgba is None:
            self.img_det.clear()
            return
        self.img_det.setImage(to_pyqtgraph(rgba), autoLevels=False, levels=(0, 255))

    def set_brain(self, rgba: np.ndarray | None) -> None:
        """RGBA uint8 (X, Y, 4) brain-mask outline drawn over every panel (None: hidden)."""
        for it in self.img_brain:
            if rgba is None:
                it.clear()
            else:
                it.setImage(to_pyqtgraph(rgba), autoLevels=False, levels=(0, 255))

    def set_title(self, i: int, text: str) -> None:
        self.titles[i].setText(text)

    def reset_zoom(self) -> None:
        self.views[0].autoRange(padding=0.02)

    # --- crosshair ---------------------------------------------------------------------------------------
    def _mouse_moved(self, pos) -> None:
        if self._shape is None:
            return
        for vb in self.views:
            if vb.sceneBoundingRect().contains(pos):
                p = vb.mapSceneToView(pos)
                sx, sy = self._spacing
                ix, iy = int(np.floor(p.x() / sx)), int(np.floor(p.y() / sy))
                nx, ny = self._shape
                if 0 <= ix < nx and 0 <= iy < ny:
                    self.show_cross(ix, iy)
                    x, y = from_pyqtgraph_xy(ix, iy, nx)
                    self.hovered.emit(x, y)
                    return
        self.hide_cross()
        self.hovered.emit(-1, -1)

    def show_cross(self, ix: int, iy: int) -> None:
        sx, sy = self._spacing
        for v, h in self.cross:
            v.setPos((ix + 0.5) * sx)
            h.setPos((iy + 0.5) * sy)
            v.show()
            h.show()

    def hide_cross(self) -> None:
        for v, h in self.cross:
            v.hide()
            h.hide()
