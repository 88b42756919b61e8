"""The batch views in the main window, end to end: a real ``batch`` run on two studies, File > Open worklist,
double-click: the study opens at its most abnormal slice with its saved result and nothing is computed; the
findings list comes from result.json and a click jumps to the finding and outlines it (pixels); N opens the next
study; the orthogonal views follow the axial crosshair and a click in them moves the axial slice."""

import json

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from viewer_study import write_study

from app.cli import main

pytestmark = pytest.mark.gui


@pytest.fixture
def batch_out(env, capsys):
    other, _ = write_study(env["tmp"] / "other", shape=(36, 40, 6))
    out = env["tmp"] / "batch"
    code = main(
        ["batch", str(env["study"]), str(other), "--model", "tiny", "--out", str(out), "--maps", "--local-threads",
         "--workers", "1", "--no-dashboard", "--no-progress", "--max-steps", "10"]
    )  # fmt: skip
    capsys.readouterr()
    assert code == 0
    return out


@pytest.fixture
def solves(monkeypatch):
    """Every slice the model solves (the saved results must need none)."""
    from app.viewer.compute import ModelSession

    calls = []
    real = ModelSession.solve_slice

    def counting(self, k, eps, *a, **kw):
        calls.append((k, eps))
        return real(self, k, eps, *a, **kw)

    monkeypatch.setattr(ModelSession, "solve_slice", counting)
    return calls


@pytest.fixture
def win(qtbot, qloop, env, errors):
    from app.gui.window import MainWindow

    w = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def _read(bv, qtbot, folder):
    """File > Open worklist on ``folder``, and wait for its read (on the worker thread) to end."""
    assert bv.open_worklist(folder) and bv.worklist_dock.isVisible()
    qtbot.waitUntil(lambda: bv.session.reading is None, timeout=20000)
    assert bv.worklist.worklist is bv.session.worklist


def _open_first(win, qtbot, batch_out):
    bv = win.batch_views
    _read(bv, qtbot, batch_out)
    t = bv.worklist.table
    entry = bv.session.worklist.entries[0]
    shown = []
    win.result_shown.connect(shown.append)
    pos = t.visualRect(t.model().index(0, 1)).center()
    qtbot.mouseClick(t.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.mouseDClick(t.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: bv.session.current is entry and bool(shown), timeout=30000)
    return bv, entry, shown


def test_open_saved_study_findings_and_next(win, qtbot, batch_out, solves):
    bv, entry, shown = _open_first(win, qtbot, batch_out)
    r = json.loads((batch_out / entry.id / "result.json").read_text())
    assert win.state.slice_index == r["peak_slice"]
    saved = bv.session.saved
    k = r["peak_slice"]
    np.testing.assert_allclose(win.ctl.shown.d, saved.d[:, :, k])  # the saved D, on screen
    assert win.ctl.timing.startswith("saved batch result") and solves == []  # nothing computed
    assert (win.state.eps, win.state.tau) == (r["eps"], r["tau"])
    # browsing the study shows saved slices, still without a model run
    win.state.slice_index = (k + 1) % win.state.study.n_slices
    assert win.ctl.shown.slice_index == win.state.slice_index and solves == []
    # the findings list from result.json
    ft = bv.findings.table
    assert ft.rowCount() == min(r["n_findings"], 200) and bv.findings_dock.isVisible()
    assert r["n_findings"] > 0  # the tiny untrained model flags plenty
    if r["n_findings"]:
        f = sorted(r["findings"], key=lambda g: (-g["max_d"], -g["voxels"], g["label"]))[0]  # most suspicious first
        assert (ft.item(0, 1).text(), ft.item(0, 2).text()) == (f"{f['max_d']:.3f}", f"{f['volume_ml']:.3f}")
        qtbot.mouseClick(ft.viewport(), Qt.MouseButton.LeftButton, pos=ft.visualItemRect(ft.item(0, 0)).center())
        assert win.state.slice_index == f["centre_slice"]
        # the outline is drawn in cyan over the detection panel, on the finding's boundary
        img = bv.outline_item.image
        assert img is not None and (img[..., :3] == (0, 255, 255)).all(axis=-1).sum() > 0
        vb = win.panels.views[3]
        ring = bv.session.outline(f["centre_slice"])
        x, y = np.argwhere(ring)[0]
        sx, sy = win.state.study.study.spacing[:2]
        ix = ring.shape[0] - 1 - x
        p = win.panels.mapFromScene(vb.mapViewToScene(QPointF((ix + 0.5) * sx, (y + 0.5) * sy)))
        c = win.panels.grab().toImage().pixelColor(int(p.x()), int(p.y()))
        assert (c.red(), c.green(), c.blue()) == (0, 255, 255)
    # asking for another eps leaves the saved result: the model computes it
    win.state.eps = r["eps"] / 2
    qtbot.waitUntil(lambda: bool(solves), timeout=10000)
    assert bv.session.saved is None and win.ctl.saved is None
    # N: the next study of the worklist, again saved
    nxt = bv.session.worklist.entries[1]
    qtbot.keyClick(win, Qt.Key.Key_N)
    qtbot.waitUntil(lambda: bv.session.current is nxt, timeout=30000)
    assert win.state.slice_index == nxt.peak_slice and win.ctl.saved is not None


def test_a_batch_folder_opened_as_a_study_opens_its_worklist_at_the_top(win, qtbot, batch_out, solves):
    """``view DIR`` (and File > Open DICOM folder, a recent entry) on a batch output folder: its worklist, and its
    most abnormal study at its peak slice with the saved result -- not its masks or SEGs read as a study. The
    worklist and findings share one column, so the four panels stay the widest thing in the window."""
    bv = win.batch_views
    shown = []
    win.result_shown.connect(shown.append)
    win.open_path(str(batch_out))
    qtbot.waitUntil(lambda: bv.session.current is not None and bool(shown), timeout=30000)
    wl = bv.session.worklist
    top = wl.entries[0]
    assert bv.session.current is top and wl.current == 0 and bv.worklist_dock.isVisible()
    assert win.state.study.study.source == top.study_path() and win.state.slice_index == top.peak_slice
    assert win.ctl.timing.startswith("saved batch result") and solves == []
    assert bv.findings_dock.isVisible()
    assert win.dockWidgetArea(bv.findings_dock) == win.dockWidgetArea(bv.worklist_dock)
    assert win.panels.width() > bv.worklist_dock.width() and win.panels.width() >= 0.4 * win.width()


def test_header_click_orders_the_worklist(win, qtbot, batch_out):
    """A click on a column header orders the rows by it (largest first), a second click the other way, with the
    sort indicator on that column; N then opens the next study of the displayed order."""
    bv = win.batch_views
    _read(bv, qtbot, batch_out)
    t = bv.worklist.table
    header = t.horizontalHeader()
    m = t.model()
    col = [header.model().headerData(i, Qt.Orientation.Horizontal) for i in range(m.columnCount())].index("study")
    flagged = [e.flagged_ml for e in bv.session.worklist.entries]

    def click(column):
        x = header.sectionViewportPosition(column) + header.sectionSize(column) // 2
        qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))

    def ids():
        return [m.index(i, col).data() for i in range(m.rowCount())]

    names = sorted(e.id for e in bv.session.worklist.entries)
    click(col)
    assert ids() == names and header.sortIndicatorSection() == col
    assert header.sortIndicatorOrder() == Qt.SortOrder.AscendingOrder
    click(col)
    assert ids() == names[::-1] and header.sortIndicatorOrder() == Qt.SortOrder.DescendingOrder
    fcol = col + 4  # flagged (ml)
    assert header.model().headerData(fcol, Qt.Orientation.Horizontal) == "flagged (ml)"
    click(fcol)
    shown = [float(m.index(i, fcol).data()) for i in range(m.rowCount())]
    assert shown == sorted(shown, reverse=True) and sorted(shown) == sorted(round(v, 2) for v in flagged)
    qtbot.keyClick(win, Qt.Key.Key_N)  # the first study of the displayed order
    qtbot.waitUntil(lambda: bv.session.current is not None, timeout=30000)
    assert bv.session.current.id == m.index(0, col).data()


def test_the_dock_says_how_well_the_order_triages(win, qtbot, batch_out):
    """Above the table, the batch's record of the card's triage measurement: amber while the order is not shown to
    triage (here: never measured), green once a measurement says it does; the measurement's details as tooltip."""
    bv = win.batch_views
    _read(bv, qtbot, batch_out)
    label = bv.worklist.triage
    assert label.isVisible() and "never measured" in label.text()
    assert label.mapTo(bv.worklist, label.rect().bottomLeft()).y() <= bv.worklist.table.y()  # above the order

    def colour():
        qtbot.wait(50)
        return label.grab().toImage().pixelColor(3, 3).name()

    assert colour() == "#fff3cd"
    doc = json.loads((batch_out / "worklist.json").read_text())
    doc["triage_evidence"] = {
        "status": "validated",
        "text": "Triage measured: AUROC 0.81 [95 % 0.68-0.92] on 48 synthetic held-out test studies.",
        "measurement": {"split": "test", "mode": "mg", "seed": 3},
    }
    (batch_out / "worklist.json").write_text(json.dumps(doc))
    _read(bv, qtbot, batch_out)
    assert label.text().startswith("Triage measured: AUROC 0.81") and colour() == "#e6f2e6"
    assert "split: test" in label.toolTip() and "seed: 3" in label.toolTip()


def test_orthogonal_views_follow_the_crosshair(win, qtbot, batch_out):
    bv, entry, _ = _open_first(win, qtbot, batch_out)
    qtbot.keyClick(win, Qt.Key.Key_O)
    assert bv.ortho_dock.isVisible()
    o = bv.ortho
    sl = win.state.study
    assert o.source is sl.raw and o.d is not None and o.mask is not None  # the saved volume result
    k = win.state.slice_index
    win.ctl.hover(5, 7)  # the mouse over axial voxel (5, 7)
    assert o.cursor.as_tuple() == (5, 7, k)
    np.testing.assert_array_equal(o.images[("coronal", 0)].image, sl.raw[:, 7, :][::-1])
    np.testing.assert_array_equal(o.images[("sagittal", 2)].image[..., 3] > 0, (o.mask[5, :, :] > 0)[::-1])
    # a click in the sagittal plane at (y=10, z=1): the axial view moves to slice 1, its crosshair to (5, 10)
    sag = o.views[("sagittal", 0)]
    ny = sl.raw.shape[1]
    sp = sl.study.spacing
    o.click_at("sagittal", QPointF((ny - 1 - 10 + 0.5) * sp[1], (1 + 0.5) * sp[2]))
    assert win.state.slice_index == 1 and o.cursor.as_tuple() == (5, 10, 1)
    v, h = win.panels.cross[0]
    assert v.isVisible() and v.value() == pytest.approx((sl.slice_shape[0] - 1 - 5 + 0.5) * sp[0])
    assert h.value() == pytest.approx((10 + 0.5) * sp[1])
    assert sag is not None


def test_a_screening_result_shows_its_reported_findings_not_every_outlined_one(win, qtbot, batch_out):
    """A batch whose card reports only findings above a cut writes a mask without the others, though their D passes
    tau: the viewer shows that mask (overlay pixels, orthogonal views, readout), names the cut over the findings
    list, and shows D > tau again once the reader moves tau. Here the study's one finding lies below the cut."""
    from app.io import load_study, save_mask
    from app.viewer.findings import SavedResult
    from app.viewer.worklist import Worklist

    entry = Worklist(batch_out).entries[0]
    r = json.loads((batch_out / entry.id / "result.json").read_text())
    study = load_study(entry.study_path())
    full = SavedResult.load(entry, study)
    hidden = full.findings.findings[0]  # outlined at tau, not reported
    kept = np.zeros_like(full.mask)
    save_mask(study, kept, batch_out / entry.id / "mask.nii.gz")
    r.update(findings=[], n_findings=0, n_outlined=len(full.findings), report_above=round(hidden.max_d + 1e-4, 6))
    (batch_out / entry.id / "result.json").write_text(json.dumps(r))
    bv, entry, _ = _open_first(win, qtbot, batch_out)
    title = bv.findings_dock.windowTitle()
    assert "reported above peak D" in title and f"of {len(full.findings)} outlined" in title
    assert bv.findings.table.rowCount() == 0
    k = hidden.peak_slice
    win.state.slice_index = k
    rgba, _ = win.ctl.detection()
    assert not (rgba[..., 3] > 0).any()  # the saved (empty) mask, not D > tau
    x, y = np.argwhere(full.findings.labels[:, :, k] == hidden.label)[0]
    assert win.ctl.shown.d[x, y] > win.state.tau and "not detected" in win.ctl.readout(int(x), int(y))
    qtbot.keyClick(win, Qt.Key.Key_O)
    assert bv.ortho.mask is not None and not bv.ortho.mask.any()
    win.state.tau = win.state.tau * 1.0001  # the reader moves tau: the map at that tau, every finding
    assert win.ctl.saved_mask() is None
    qtbot.waitUntil(lambda: win.ctl.shown is not None and win.ctl.shown.slice_index == k, timeout=30000)
    rgba, _ = win.ctl.detection()
    if win.ctl.shown.d[x, y] > win.state.tau:
        assert (rgba[..., 3] > 0).any()


def test_an_unfinished_batch_says_so_above_its_worklist(win, qtbot, batch_out):
    """A batch folder without its worklist (a batch still running, or stopped before writing it) opens with the
    studies done so far, under an amber note that the order may still change; a finished one shows no note."""
    bv = win.batch_views
    _read(bv, qtbot, batch_out)
    note = bv.worklist.unfinished
    assert not note.isVisible() and "so far" not in bv.worklist_dock.windowTitle()
    (batch_out / "worklist.json").unlink()
    _read(bv, qtbot, batch_out)
    qtbot.waitUntil(note.isVisible, timeout=5000)
    assert "No worklist.json yet" in note.text() and "so far" in bv.worklist_dock.windowTitle()
    assert bv.worklist.model.rowCount() == 2  # the studies done are listed
    img = note.grab().toImage()
    c = img.pixelColor(2, 2)  # the note's amber background, as painted
    assert (c.red(), c.green(), c.blue()) == (0xFF, 0xF3, 0xCD)


def test_worklist_columns_fit_their_contents_after_every_fill(win, qtbot, batch_out, tmp_path):
    """The worklist and findings tables size their columns to their contents once per fill, not at every cell: a
    header in ResizeToContents mode measured every row again at each cell of a visible table, so reopening or
    sorting a 2,000-study worklist took minutes (0.37 and 0.17 s after the change, docs/viewer.md). The columns
    still fit the widest cell after a reopen and a sort of a many-study worklist."""
    from PySide6.QtWidgets import QHeaderView

    big = _copies(batch_out, tmp_path / "big", 120)
    bv = win.batch_views
    t = bv.worklist.table
    header = t.horizontalHeader()
    for _ in range(2):  # the second fill happens with the dock visible
        _read(bv, qtbot, big)
    bv.worklist.sort_by_column(2)
    assert t.model().rowCount() == 120
    for tbl in (t, bv.findings.table):
        h = tbl.horizontalHeader()
        assert all(h.sectionResizeMode(c) != QHeaderView.ResizeMode.ResizeToContents for c in range(h.count()))
    for c in range(t.model().columnCount()):  # every column at least as wide as its widest cell and its header
        assert header.sectionSize(c) >= max(t.sizeHintForColumn(c), header.sectionSizeHint(c)) - 1


def _copies(batch_out, folder, n):
    """``folder`` holding ``n`` copies of one study's result under other ids and scores (a larger batch folder)."""
    import shutil

    src = json.loads((batch_out / "worklist.json").read_text())["studies"][0]["folder"]
    for i in range(n):
        shutil.copytree(batch_out / src, folder / f"s{i:03d}")
        r = json.loads((folder / f"s{i:03d}" / "result.json").read_text())
        r.update(id=f"s{i:03d}", score=float(i % 17) / 17)
        (folder / f"s{i:03d}" / "result.json").write_text(json.dumps(r))
    return folder


def test_reading_a_worklist_leaves_the_window_responsive(win, qtbot, batch_out, tmp_path, monkeypatch):
    """The folder is read on a worker thread: while its results are read (slowed here to 15 ms each, as on a
    network share), the GUI thread keeps serving its timers, the dock's title counts the results read, and the
    list appears when the read is done. On the GUI thread the timer would not have fired once."""
    import time

    from PySide6.QtCore import QTimer

    import app.viewer.worklist as wlmod

    big = _copies(batch_out, tmp_path / "slow", 60)
    real = wlmod.read_result

    def slow(path):
        time.sleep(0.015)
        return real(path)

    monkeypatch.setattr(wlmod, "read_result", slow)
    monkeypatch.setattr(wlmod, "READ_CHUNK", 10)
    bv = win.batch_views
    titles, ticks = [], []
    bv.worklist.title_changed.connect(titles.append)
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(bv.session.reading))
    timer.start(10)
    t0 = time.perf_counter()
    assert bv.open_worklist(big)
    assert time.perf_counter() - t0 < 0.3 and bv.session.worklist is None  # returned before reading 0.9 s of results
    qtbot.waitUntil(lambda: bv.session.reading is None, timeout=20000)
    timer.stop()
    assert sum(t is not None for t in ticks) >= 20  # the event loop ran all through the read
    assert any(t.startswith("Worklist - reading slow: 30 of 60 results") for t in titles), titles
    assert bv.worklist.model.rowCount() == 60
    assert bv.worklist_dock.windowTitle().startswith("Worklist - slow (60 studies")


def test_reload_lists_the_studies_finished_since(win, qtbot, batch_out, tmp_path):
    """A batch still running: the amber note carries a Reload button; a click reads the folder again, lists the
    study finished since, and keeps the reader's order and study."""
    import os
    import shutil

    bv = win.batch_views
    doc = json.loads((batch_out / "worklist.json").read_text())
    doc["n_pending"] = 1
    (batch_out / "worklist.json").write_text(json.dumps(doc))
    _read(bv, qtbot, batch_out)
    button = bv.worklist.reload
    qtbot.waitUntil(button.isVisible, timeout=5000)
    t, m = bv.worklist.table, bv.worklist.model
    assert m.rowCount() == 2
    bv.worklist.sort_by_column(1)  # by study id, ascending
    bv.worklist.open_row(1)
    chosen = bv.session.worklist.entries[1].id
    src = doc["studies"][0]["folder"]
    shutil.copytree(batch_out / src, batch_out / "aaa-late")
    r = json.loads((batch_out / "aaa-late" / "result.json").read_text())
    r["id"] = "aaa-late"
    (batch_out / "aaa-late" / "result.json").write_text(json.dumps(r))
    stamp = (batch_out / "worklist.json").stat().st_mtime + 5
    os.utime(batch_out / "aaa-late" / "result.json", (stamp, stamp))
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: m.rowCount() == 3, timeout=20000)
    ids = [m.index(i, 1).data() for i in range(3)]
    assert ids == sorted(ids) and ids[0] == "aaa-late"  # the reader's order kept
    assert (
        t.currentIndex().row() == ids.index(chosen) and "finished since are included" in bv.worklist.unfinished.text()
    )


def test_an_unfinished_worklist_follows_its_batch(win, qtbot, batch_out, tmp_path, monkeypatch):
    """While the batch has not finished the dock reads the folder again on a timer, as often as the batch writes its
    lists (the worklist's ``rewrite_s``; a minute before it has written one; tenths of a second here): a study
    finished since appears without the reader asking, the list stays where the reader scrolled it and on the study
    they chose; once the batch has finished the timer stops."""
    import os

    import app.viewer.worklist as worklist_module

    monkeypatch.setattr(worklist_module, "REFRESH_S", 0.2)
    monkeypatch.setattr(worklist_module, "MIN_REFRESH_S", 0.1)
    big = _copies(batch_out, tmp_path / "night", 80)  # no worklist.json yet: a batch at its first studies
    bv = win.batch_views
    _read(bv, qtbot, big)
    t, m = bv.worklist.table, bv.worklist.model
    assert m.rowCount() == 80 and bv.refresh_timer.isActive() and bv.refresh_timer.interval() == 200
    bv.worklist.open_row(3)  # a study near the top, then the list scrolled away from it
    chosen = bv.session.worklist.entries[3].id
    bar = t.verticalScrollBar()
    bar.setValue(bar.maximum() // 2)
    top = bar.value()
    assert top > 0
    late = json.loads((big / "s000" / "result.json").read_text())
    late.update(id="late", score=99.0)  # ranks first: every row below moves down by one
    (big / "late").mkdir()
    (big / "late" / "result.json").write_text(json.dumps(late))
    qtbot.waitUntil(lambda: m.rowCount() == 81, timeout=10000)
    assert m.index(0, 1).data() == "late" and bar.value() == top
    assert bv.session.worklist.entries[t.currentIndex().row()].id == chosen
    from app.viewer.worklist import write_worklist

    results = [json.loads(p.read_text()) for p in sorted(big.glob("*/result.json"))]
    write_worklist(big, results, {"n_pending": 3, "rewrite_s": 0.3})  # the batch's lists, rewritten every 0.3 s
    qtbot.waitUntil(lambda: bv.refresh_timer.interval() == 300, timeout=10000)
    assert bv.refresh_timer.isActive() and "every 0.3 s" in bv.worklist.unfinished.text()
    write_worklist(big, results, {"n_pending": 0, "rewrite_s": 0.3})  # the batch finished
    stamp = (big / "worklist.json").stat().st_mtime + 5
    os.utime(big / "worklist.json", (stamp, stamp))
    qtbot.waitUntil(lambda: not bv.refresh_timer.isActive(), timeout=10000)
    assert not bv.worklist.note_row.isVisible() and m.rowCount() == 81


def test_findings_at_a_new_tau_are_computed_off_the_gui_thread_and_the_newest_shown(
    win, qtbot, batch_out, solves, monkeypatch
):
    """Moving tau over a volume result labels the whole volume again (a tenth of a second for a small study, about
    ten times that for a clinical one): it runs on the findings worker, not on the GUI thread, and of two quick
    steps only the last tau's findings are shown."""
    import threading

    from app.viewer.findings import FindingsList

    bv, entry, _ = _open_first(win, qtbot, batch_out)
    threads = []
    real = FindingsList.from_volume.__func__

    def recording(cls, *a, **kw):
        threads.append(threading.current_thread())
        return real(cls, *a, **kw)

    monkeypatch.setattr(FindingsList, "from_volume", classmethod(recording))
    tau0 = win.state.tau
    win.state.tau = tau0 * 0.5
    win.state.tau = tau0 * 0.8  # a second step before the first one's findings arrived
    final = win.state.tau
    qtbot.waitUntil(
        lambda: "at the new tau" in (bv.session.findings.source if bv.session.findings else ""), timeout=20000
    )
    qtbot.wait(200)  # anything still on its way would arrive now
    assert threads and all(t is not threading.main_thread() for t in threads)
    fl = bv.session.findings
    vol = win.ctl.volume
    expected = FindingsList.from_volume(vol.d, final, win.state.study.study.affine, mask=win.ctl.mask_at(vol.d, final))
    assert [f.voxels for f in fl.findings] == [f.voxels for f in expected.findings]  # the last tau's
    assert bv.findings.table.rowCount() == min(len(expected), 200) and solves == []


def test_the_orthogonal_views_take_the_new_tau_detection_from_the_findings_worker(win, qtbot, batch_out, solves):
    """With the orthogonal views open, a tau step does not compute the volume's detection on the GUI thread: the
    views show the findings worker's (its labels > 0, the detection as drawn) when it arrives."""
    bv, entry, _ = _open_first(win, qtbot, batch_out)
    qtbot.keyClick(win, Qt.Key.Key_O)
    assert bv.ortho_dock.isVisible()
    calls = []
    real = win.ctl.volume_detection
    win.ctl.volume_detection = lambda: calls.append(1) or real()
    tau = win.state.tau * 0.6
    win.state.tau = tau
    assert calls == [] and bv.session.findings_pending  # nothing computed yet on this thread
    qtbot.waitUntil(lambda: not bv.session.findings_pending, timeout=20000)
    del win.ctl.volume_detection
    expected = win.ctl.mask_at(win.ctl.volume.d, tau)
    assert expected.any() and np.array_equal(bv.ortho.mask, expected)


def test_the_orthogonal_views_show_a_whole_volume_run_when_it_ends(window, qtbot):
    """Orthogonal views open, then a whole-volume run: when it ends (and its findings, computed off the GUI thread,
    arrive) the views show its D and the detection as drawn at the current tau."""
    bv = window.batch_views
    qtbot.keyClick(window, Qt.Key.Key_O)
    assert bv.ortho_dock.isVisible() and bv.ortho.mask is None  # no volume result yet
    window.run_volume()
    qtbot.waitUntil(lambda: window.ctl.volume is not None and not bv.session.findings_pending, timeout=60000)
    qtbot.waitUntil(lambda: bv.ortho.mask is not None, timeout=20000)
    assert bv.ortho.d is window.ctl.volume.d
    assert np.array_equal(bv.ortho.mask, window.ctl.volume_detection())
    assert bv.session.findings is not None and bv.session.findings.source == "volume run"
