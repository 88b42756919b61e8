"""The viewer with studies straight from the scanner, offscreen: the warning banner lists every domain warning of
the current study and model (and goes away with them), the brain-mask toggle outlines the mask on the rendered
panels exactly at its boundary (and takes it away again), skull-on brain extraction runs in the worker, and Save
mask writes the brain mask and the preprocessing record beside the mask as detect does."""

import json
import threading

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from viewer_study import make_volume, write_model

pytestmark = pytest.mark.gui


def _model_with_domain(models, name, domain):
    import torch

    from app.nets import ModelConfig, create_model
    from app.nets.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model(ModelConfig("ae-l1", image_size=32, latent_dim=8, width=4)).freeze()
    card = {"eps_range": [0.0, 0.5], "chosen": {"eps": 0.2, "tau": 0.15, "tau_base": 0.2}, "domain": domain}
    return save_checkpoint(model, models / name, card)


@pytest.fixture
def scanner_env(tmp_path, monkeypatch):
    """A synthetic T2-named study with 3 mm slices (skull-stripped: its non-zero part is the brain), a model
    trained on T1 with voxels <= 1 mm and one without a domain."""
    from PySide6.QtCore import QSettings

    import app.nets.zoo as zoo

    vol, _ = make_volume()
    study = tmp_path / "head_t2.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([2.0, 2.0, 3.0, 1.0])), str(study))
    models = tmp_path / "models"
    _model_with_domain(models, "t1thin", {"modality": "MR", "contrast": "T1", "max_slice_mm": 1.0})
    write_model(models, "plain")
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    return {"study": study, "volume": vol, "tmp": tmp_path}


def _open(qtbot, win, path, model):
    prepared = []
    win.ctl.events.prepared.connect(prepared.append)
    assert win.set_model(model)
    win.open_path(path)
    qtbot.waitUntil(lambda: bool(prepared) and win.shown is not None and win.worker.is_idle(), timeout=120000)
    return prepared


@pytest.fixture
def scanner_window(qtbot, qloop, scanner_env, errors):
    from app.gui.window import MainWindow

    win = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(win)
    win.show()
    win.resize(1000, 760)
    _open(qtbot, win, scanner_env["study"], "t1thin")
    yield win
    win.close()


def test_banner_shows_each_domain_warning_and_goes_with_them(scanner_window, qtbot, errors):
    win = scanner_window
    assert win.banner.isVisible()
    lines = win.banner.text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("Warning: T2 contrast (file name) but the model was trained on T1")
    assert lines[1].startswith("Warning: slices 3.0 mm thick, much thicker than training (<= 1 mm)")
    assert win.ctl.warnings == [w.removeprefix("Warning: ") for w in lines]
    # a model without a domain: nothing to warn about, the banner goes
    assert win.set_model("plain")
    qtbot.waitUntil(lambda: not win.banner.isVisible(), timeout=30000)
    assert win.ctl.warnings == []
    # and back: the same two lines again, known from the study already prepared (no second preparation)
    assert win.set_model("t1thin")
    qtbot.waitUntil(lambda: win.banner.isVisible(), timeout=30000)
    assert win.banner.text().splitlines() == lines
    assert not errors


def _grab(win):
    win.panels.repaint()
    img = win.panels.viewport().grab().toImage()
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB32)
    w, h = img.width(), img.height()
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :w, :3]
    return arr.astype(np.int16).copy()


def _pixel_voxels(win, pixels, offsets=((0.5, 0.5),)):
    """For each (row, col) viewport pixel: the (panel, x, y) slice voxels under the points ``offsets`` (in pixels
    from its top-left corner) -- None where a point is outside the four images."""
    from PySide6.QtCore import QPointF

    from app.viewer.slices import from_pyqtgraph_xy

    panels = win.panels
    nx, ny = panels._shape
    sx, sy = panels._spacing
    to_scene, _ok = panels.viewportTransform().inverted()
    out = []
    for r, c in pixels:
        hits = []
        for dc, dr in offsets:
            scene = to_scene.map(QPointF(c + dc, r + dr))
            hit = None
            for i, vb in enumerate(panels.views):
                if vb.sceneBoundingRect().contains(scene):
                    p = vb.mapSceneToView(scene)
                    ix, iy = int(np.floor(p.x() / sx)), int(np.floor(p.y() / sy))
                    if 0 <= ix < nx and 0 <= iy < ny:
                        hit = (i, *from_pyqtgraph_xy(ix, iy, nx))
                    break
            hits.append(hit)
        out.append(hits)
    return out


def test_brain_toggle_outlines_the_mask_on_the_panels_exactly_and_back(scanner_window, scanner_env, qtbot):
    from PySide6.QtCore import QPoint, QPointF, Qt

    win = scanner_window
    k = win.state.slice_index
    vol = scanner_env["volume"]
    brain = vol[:, :, k] > vol.min()  # skull-stripped input: its non-zero part is the brain, left as it is
    boundary = brain & ~ndi.binary_erosion(brain, border_value=0)
    before = _grab(win)
    box = win.controls.brain_check
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert win.state.show_brain
    for item in win.panels.img_brain:  # the layer on every panel: opaque exactly on the boundary
        np.testing.assert_array_equal(item.image[::-1][..., 3] > 0, boundary)
    after = _grab(win)
    changed = np.argwhere(np.abs(after - before).max(axis=2) > 40)
    assert len(changed) > 100
    # every changed screen pixel covers a boundary voxel: the voxel under its centre, or (where a voxel edge
    # crosses the pixel, so rasterisation may give it to either side) under one of its corners
    corners = ((0.5, 0.5), (0.02, 0.02), (0.98, 0.02), (0.02, 0.98), (0.98, 0.98))
    where = _pixel_voxels(win, changed, corners)
    assert all(hits[0] is not None for hits in where)  # nothing changed outside the four images
    assert all(any(h is not None and boundary[h[1], h[2]] for h in hits) for hits in where)
    centre_on = np.mean([boundary[hits[0][1], hits[0][2]] for hits in where])
    assert centre_on > 0.97, centre_on  # and nearly all of them by their centre
    assert {hits[0][0] for hits in where} == {0, 1, 2, 3}  # on all four panels
    # every boundary voxel is drawn: the pixel at its centre changed (input panel)
    vb = win.panels.views[0]
    sx, sy = win.panels._spacing
    nx = win.panels._shape[0]
    diff = np.abs(after - before).max(axis=2) > 40
    for x, y in np.argwhere(boundary):
        ix = nx - 1 - x
        pt = win.panels.mapFromScene(vb.mapViewToScene(QPointF((ix + 0.5) * sx, (y + 0.5) * sy)))
        assert diff[pt.y(), pt.x()], (x, y)
    # off again: the panels are exactly as before
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert not win.state.show_brain
    assert all(item.image is None for item in win.panels.img_brain)
    np.testing.assert_array_equal(_grab(win), before)


def test_save_mask_writes_brain_mask_and_record_beside_it(scanner_window, scanner_env, qtbot):
    win = scanner_window
    saved = []
    win.ctl.events.saved.connect(saved.append)
    out = scanner_env["tmp"] / "viewer_mask.nii.gz"
    win.save_mask(str(out))
    qtbot.waitUntil(lambda: bool(saved), timeout=120000)
    rec = json.loads((scanner_env["tmp"] / "viewer_mask_preprocessing.json").read_text())
    assert rec["warnings"] == win.ctl.warnings and len(rec["warnings"]) == 2
    assert rec["model"]["name"] == "t1thin" and len(rec["model"]["card_sha256"]) == 64
    assert rec["eps"] == pytest.approx(win.state.eps) and rec["tau"] == pytest.approx(win.state.tau)
    assert rec["brain_extraction"]["status"] == "already-stripped" and rec["bias_correction"]["ran"] is False
    brain = nib.load(str(scanner_env["tmp"] / "viewer_mask_brainmask.nii.gz"))
    vol = scanner_env["volume"]
    np.testing.assert_array_equal(np.asarray(brain.dataobj) > 0, vol > vol.min())
    np.testing.assert_allclose(brain.affine, nib.load(str(out)).affine)


def test_skull_on_extraction_runs_in_the_worker(qtbot, qloop, tmp_path, monkeypatch, errors):
    """A skull-on head (Colin27 at 4 mm): N4 and the atlas registration run in the slice worker, never on the GUI
    thread, and the brain they find is what the toggle outlines."""
    from PySide6.QtCore import QSettings

    import app.data.brain as brain_mod
    import app.nets.zoo as zoo
    from app.data import sources
    from app.gui.window import MainWindow

    img = nib.load(str(sources.path_of("mricron-data", "usr/share/mricron/templates/ch2.nii.gz", log=lambda *a: None)))
    vol = np.asarray(img.dataobj)[::4, ::4, ::4]
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(vol, img.affine @ np.diag([4.0, 4.0, 4.0, 1.0])), str(path))
    models = tmp_path / "models"
    write_model(models, "tiny")
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    threads = {}
    real_extract, real_n4 = brain_mod.extract_brain, brain_mod.n4_correct

    def extract(*a, **k):
        threads["extract"] = threading.current_thread()
        return real_extract(*a, **k)

    def n4(*a, **k):
        threads["n4"] = threading.current_thread()
        return real_n4(*a, **k)

    monkeypatch.setattr(brain_mod, "extract_brain", extract)
    monkeypatch.setattr(brain_mod, "n4_correct", n4)
    win = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(win)
    win.show()
    try:
        _open(qtbot, win, path, "tiny")
        main = threading.main_thread()
        assert set(threads) == {"extract", "n4"}
        assert threads["extract"] is not main and threads["n4"] is not main
        prep = win.session.prepared()
        assert prep.preprocessing["skull_strip"]["status"] == "atlas" and prep.brain is not None
        win.state.show_brain = True
        k = win.state.slice_index
        expected = prep.brain[:, :, k] & ~ndi.binary_erosion(prep.brain[:, :, k], border_value=0)
        assert expected.any()
        np.testing.assert_array_equal(win.panels.img_brain[0].image[::-1][..., 3] > 0, expected)
        assert not errors
    finally:
        win.close()
