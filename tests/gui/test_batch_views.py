"""The batch views as widgets (pytest-qt, offscreen): the orthogonal views draw the coronal and sagittal planes
through the cursor with the crosshair where the cursor is (checked on screen pixels), a click in a plane moves the
cursor; the worklist dock lists the ranked studies and a double-click asks to open one (never a failure); the
findings dock lists the findings and a click chooses one."""

import json

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

pytestmark = pytest.mark.gui


def _pixel(widget, vb, x, y):
    """Screen colour (r, g, b) of view coordinate (x, y) of ViewBox ``vb`` in ``widget``."""
    img = widget.grab().toImage()
    p = widget.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    dpr = img.devicePixelRatio()
    c = img.pixelColor(int(p.x() * dpr), int(p.y() * dpr))
    return c.red(), c.green(), c.blue()


def _is_cross(rgb):
    r, g, b = rgb
    return r > 200 and g > 170 and b < 90


def _cross_near(widget, vb, x, y, vertical):
    """A crosshair-coloured screen pixel within 2 pixels of view point (x, y), across the line's direction (a
    1-pixel line lands on either neighbour of the rounded position)."""
    img = widget.grab().toImage()
    p = widget.mapFromScene(vb.mapViewToScene(QPointF(x, y)))
    for off in range(-2, 3):
        px, py = (int(p.x()) + off, int(p.y())) if vertical else (int(p.x()), int(p.y()) + off)
        c = img.pixelColor(px, py)
        if _is_cross((c.red(), c.green(), c.blue())):
            return True
    return False


@pytest.fixture
def ortho(qtbot):
    from app.gui.ortho import OrthoViews

    w = OrthoViews()
    qtbot.addWidget(w)
    w.resize(900, 600)
    w.show()
    qtbot.waitExposed(w)
    vol = np.zeros((20, 16, 12), np.float32)
    vol[4, 10, 8] = 1000.0  # in the coronal plane y=10, not in the sagittal plane x=12
    d = np.zeros_like(vol)
    d[4, 10, 8] = 0.8
    w.set_volumes(vol, d, d > 0.5, spacing=(1.0, 2.0, 3.0), levels=(0.0, 1000.0))
    w.set_cursor(12, 10, 3)
    qtbot.wait(50)
    return w


def test_ortho_planes_and_crosshair_pixels(ortho):
    from app.viewer.ortho import voxel_to_screen

    w = ortho
    cor, sag = w.views[("coronal", 0)], w.views[("sagittal", 0)]
    # coronal (X horizontal flipped, Z up; 1 x 3 mm pixels): the bright voxel (x=4, z=8) at its place
    ix, iy = voxel_to_screen(4, 8, 20)
    assert min(_pixel(w, cor, (ix + 0.5) * 1.0, (iy + 0.5) * 3.0)) > 200
    # the crosshair at the cursor: x=12 -> column 7, z=3; a yellow line there, black beside it
    cx, cz = voxel_to_screen(12, 3, 20)
    assert w.cross_position("coronal") == pytest.approx(((cx + 0.5) * 1.0, (cz + 0.5) * 3.0))
    assert _cross_near(w, cor, (cx + 0.5) * 1.0, 1.0, vertical=True)  # on the vertical line, near the bottom
    assert _cross_near(w, cor, 1.0, (cz + 0.5) * 3.0, vertical=False)  # on the horizontal line
    assert _pixel(w, cor, (cx + 3.5) * 1.0, 1.0) == (0, 0, 0)
    # sagittal (x = 12): Y horizontal flipped (2 mm), Z up; the bright voxel is not in it; cross at y=10, z=3
    sy_, sz = voxel_to_screen(10, 3, 16)
    assert _cross_near(w, sag, (sy_ + 0.5) * 2.0, 1.0, vertical=True)
    assert not _cross_near(w, sag, (sy_ + 3.5) * 2.0, 1.0, vertical=True)
    assert max(_pixel(w, sag, (voxel_to_screen(10, 8, 16)[0] + 0.5) * 2.0 + 4.0, (8 + 0.5) * 3.0)) < 60
    # the detection panel shows the mask in red over the input
    r, g, b = _pixel(w, w.views[("coronal", 2)], (ix + 0.5), (iy + 0.5) * 3.0)
    assert r > 200 and g < 200


def test_click_in_a_plane_moves_the_cursor(ortho, qtbot):
    from app.viewer.ortho import voxel_to_screen

    w = ortho
    sag = w.views[("sagittal", 1)]
    got = []
    w.cursor_moved.connect(lambda *c: got.append(c))
    hx, vz = voxel_to_screen(5, 7, 16)  # sagittal voxel y=5, z=7
    p = w.mapFromScene(sag.mapViewToScene(QPointF((hx + 0.5) * 2.0, (vz + 0.5) * 3.0)))
    qtbot.mouseClick(w.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(int(p.x()), int(p.y())))
    qtbot.waitUntil(lambda: bool(got), timeout=3000)
    assert got[-1] == (12, 5, 7)  # x (the sagittal cut) stays
    assert w.cursor.as_tuple() == (12, 5, 7)
    # the coronal planes now cut at y = 5
    np.testing.assert_array_equal(w.images[("coronal", 0)].image, w.raw[:, 5, :][::-1])


def _results(folder):
    rs = [
        {"id": "low", "status": "ok", "score": 0.2, "flagged_ml": 1, "peak_slice": 1, "n_findings": 1},
        {"id": "high", "status": "ok", "score": 5.0, "flagged_ml": 6, "peak_slice": 2, "n_findings": 3},
        {"id": "broken", "status": "failed", "error": "broken.nii.gz: truncated"},
    ]
    for r in rs:
        r["input"] = {"kind": "file", "source": f"/d/{r['id']}.nii.gz", "files": [f"/d/{r['id']}.nii.gz"]}
        (folder / r["id"]).mkdir(parents=True)
        (folder / r["id"] / "result.json").write_text(json.dumps(r))
    return rs


def test_worklist_dock_double_click(qtbot, tmp_path):
    from app.gui.worklist_dock import WorklistPanel
    from app.viewer.worklist import Worklist

    _results(tmp_path)
    dock = WorklistPanel()
    qtbot.addWidget(dock)
    dock.resize(700, 300)
    dock.show()
    qtbot.waitExposed(dock)
    dock.set_worklist(Worklist(tmp_path))
    t = dock.table
    m = t.model()

    def cell(i, j, role=Qt.ItemDataRole.DisplayRole):
        return m.index(i, j).data(role)

    assert [cell(i, 1) for i in range(m.rowCount())] == ["high", "low", "broken"]
    from app.gui.worklist_dock import HEADERS

    status = HEADERS.index("status")
    assert cell(2, 0) == "" and "truncated" in cell(2, status)
    assert cell(2, 1, Qt.ItemDataRole.ToolTipRole) == "broken.nii.gz: truncated"  # a failure: greyed, error as tip
    assert cell(2, 1, Qt.ItemDataRole.ForegroundRole).getRgb()[:3] == (150, 150, 150)
    assert (
        cell(0, 1, Qt.ItemDataRole.ToolTipRole) == "/d/high.nii.gz"
        and cell(0, 1, Qt.ItemDataRole.ForegroundRole) is None
    )
    grab = t.viewport().grab().toImage()  # as painted: a failed row's text grey, a study's black

    def darkest(row):
        r = t.visualRect(m.index(row, 1))
        return min(
            grab.pixelColor(x, y).lightness() for x in range(r.left(), r.right()) for y in range(r.top(), r.bottom())
        )

    assert darkest(0) < 80 and 140 <= darkest(2) < 200
    opened = []
    dock.open_requested.connect(opened.append)

    def dclick(row):
        pos = t.visualRect(m.index(row, 1)).center()
        # as a user does it: press-release, then the second press that Qt reports as a double-click
        qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=pos)
        qtbot.mouseDClick(t.viewport(), Qt.MouseButton.LeftButton, pos=pos)

    dclick(1)
    assert [e.id for e in opened] == ["low"]
    dclick(2)  # a failure cannot be opened
    assert [e.id for e in opened] == ["low"]
    t.setFocus()
    t.setCurrentIndex(m.index(0, 1))
    qtbot.keyClick(t, Qt.Key.Key_Return)  # Enter opens the current row too
    assert [e.id for e in opened] == ["low", "high"]
    dock.worklist.select(1)
    assert dock.step(-1).id == "high" and [e.id for e in opened] == ["low", "high", "high"]
    assert dock.step(-1) is None and t.currentIndex().row() == 0


def test_findings_dock_click(qtbot):
    from app.gui.findings_dock import FindingsPanel
    from app.viewer.findings import FindingsList

    d = np.zeros((10, 10, 6), np.float32)
    d[1:4, 1:4, 1:3] = 0.9  # 18 voxels
    d[7:9, 7:9, 4] = 0.95  # 4 voxels, the most suspicious: listed first
    fl = FindingsList.from_volume(d, 0.5, np.eye(4))
    dock = FindingsPanel()
    qtbot.addWidget(dock)
    dock.show()
    dock.set_findings(fl)
    t = dock.table
    assert t.rowCount() == 2 and [t.item(i, 0).text() for i in range(2)] == ["2", "1"]  # labels: 1 is the larger
    assert (t.item(0, 1).text(), t.item(0, 2).text(), t.item(0, 5).text()) == ("0.950", "0.004", "4-4")
    assert (t.item(1, 1).text(), t.item(1, 2).text()) == ("0.900", "0.018")
    chosen = []
    dock.finding_chosen.connect(chosen.append)
    qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=t.visualItemRect(t.item(1, 0)).center())
    assert chosen == [1] and fl.select(1).voxels == 18  # the row's finding, whatever its label


def test_worklist_columns_fit_the_widest_text_not_the_longest(qtbot, tmp_path):
    """The columns are sized from the widest text as drawn (one measure per distinct text), which is not always the
    one with the most characters: each column exactly as wide as Qt's own measure of every cell would make it."""
    from app.gui.worklist_dock import WorklistPanel
    from app.viewer.worklist import Worklist

    for sid in ("WWWWWW", "iiiiiiiiiii", "mid-07"):
        r = {"id": sid, "status": "ok", "score": 1.0, "flagged_ml": 1.0, "peak_slice": 1, "n_findings": 1}
        r["input"] = {"kind": "file", "source": f"/d/{sid}.nii.gz", "files": [f"/d/{sid}.nii.gz"]}
        (tmp_path / sid).mkdir()
        (tmp_path / sid / "result.json").write_text(json.dumps(r))
    dock = WorklistPanel()
    qtbot.addWidget(dock)
    dock.resize(700, 300)
    dock.show()
    dock.set_worklist(Worklist(tmp_path))
    t, header = dock.table, dock.table.horizontalHeader()
    fm = t.fontMetrics()
    assert fm.horizontalAdvance("WWWWWW") > fm.horizontalAdvance("iiiiiiiiiii")  # the shorter text is the wider
    for c in range(t.model().columnCount()):
        assert header.sectionSize(c) == max(t.sizeHintForColumn(c), header.sectionSizeHint(c))
