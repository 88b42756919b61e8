"""The viewer, offscreen: opening a study, tau and eps, the worker, closing, errors, saving, exporting."""

import time

import numpy as np
import pytest

from app.core.metrics import dice

pytestmark = pytest.mark.gui


def overlay_alpha(win):
    img = win.panels.img_det.image
    return None if img is None else img[..., 3]


def test_open_study_shows_all_four_panels(window, env):
    sl = window.state.study
    assert sl.n_slices == 6 and window.state.slice_index == 2  # opens on the largest lesion
    raw = window.panels.img_input.image
    assert raw.shape == sl.slice_shape
    # radiological display: the ImageItem holds the slice with X flipped
    np.testing.assert_array_equal(raw, sl.raw_slice(2)[::-1])
    r = window.shown
    assert r.eps == pytest.approx(0.2) and r.slice_index == 2
    assert window.panels.img_pseudo.image.shape == sl.slice_shape
    np.testing.assert_allclose(window.panels.img_diff.image, r.d[::-1])
    assert window.panels.img_det.image.shape == (*sl.slice_shape, 4)
    assert "Dice" in window.panels.titles[3].text
    assert env["study"].name in window.windowTitle()
    assert str(env["study"]) in window.recent_files()
    letters = [t.text() for t in window.panels._letters[0] if t.isVisible()]
    assert letters == ["R", "L", "A", "P"]  # an MR study: radiological orientation letters


def test_tau_rethresholds_at_once_and_dice_follows(window, qtbot):
    r, gt = window.shown, window.state.study.gt_slice(window.state.slice_index)
    seen = []
    window.detection_updated.connect(seen.append)
    busy_before = window.worker.is_idle()
    window.controls.tau.spin.setValue(0.05)  # the numeric field
    low_alpha = overlay_alpha(window).copy()
    low_rgb = window.panels.img_det.image[::-1].copy()  # back to (X, Y)
    window.controls.tau.slider.setValue(150)  # the slider: 150 / 200 -> 0.75
    high_alpha = overlay_alpha(window).copy()
    assert window.state.tau == pytest.approx(0.75)
    assert busy_before and window.worker.is_idle()  # no worker involved
    assert seen[0] == pytest.approx(dice(r.d > 0.05, gt))
    assert seen[-1] == pytest.approx(dice(r.d > 0.75, gt))
    assert seen[0] != seen[-1]
    # the overlay shows exactly prediction-or-truth pixels
    assert np.count_nonzero(low_alpha) == np.count_nonzero((r.d > 0.05) | gt)
    assert np.count_nonzero(high_alpha) == np.count_nonzero((r.d > 0.75) | gt)
    assert f"{seen[-1]:.3f}" in window.controls.dice_label.text()
    # TP pixels are red in the overlay
    tp, fn = (r.d > 0.05) & gt, (r.d <= 0.05) & gt
    assert tp.any() and (low_rgb[tp][:, :3] == [255, 0, 0]).all()
    assert (low_rgb[fn][:, :3] == [0, 255, 0]).all()


def test_opacity_scales_overlay_alpha(window):
    window.state.overlay_opacity = 1.0
    assert overlay_alpha(window).max() == 255
    window.controls.opacity.spin.setValue(0.2)
    assert overlay_alpha(window).max() == 51


def test_fifty_quick_eps_moves_show_only_the_last(window, qtbot, errors):
    shown = []
    window.result_shown.connect(shown.append)
    gens = []
    window.cache.clear()  # every move is then a real request (no value is answered from the cache)
    for i in range(50):
        window.controls.eps.slider.setValue(1 + i % 25)
        gens.append(window.worker.generation)
    last = window.state.eps
    assert gens == sorted(gens) and len(set(gens)) == 50
    qtbot.waitUntil(lambda: bool(shown) and window.worker.is_idle(), timeout=60000)
    qtbot.wait(100)
    assert [r.eps for r in shown] == [pytest.approx(last)]
    assert window.shown.eps == pytest.approx(last)
    assert not errors
    assert window.worker.is_idle() and window.worker.isRunning()
    qtbot.waitUntil(lambda: window.busy_label.text() == "" and not window.state.busy, timeout=3000)


def test_plus_mg_toggle_switches_base_and_matchgen(window, qtbot):
    mg = window.shown
    window.controls.mg_check.setChecked(False)
    qtbot.waitUntil(lambda: window.shown.eps == 0.0, timeout=30000)
    base = window.shown
    assert not np.allclose(base.s, mg.s)
    assert "(base)" in window.panels.titles[1].text
    window.controls.mg_check.setChecked(True)  # cached: shown at once
    assert window.shown is mg


def test_slice_keys_and_wheel_change_slice(window, qtbot):
    from PySide6.QtCore import Qt

    qtbot.keyClick(window, Qt.Key.Key_Down)
    assert window.state.slice_index == 1
    window.panels.slice_step.emit(1)
    window.panels.slice_step.emit(1)
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert window.state.slice_index == 4
    qtbot.keyClick(window, Qt.Key.Key_End)
    assert window.state.slice_index == 5
    qtbot.waitUntil(lambda: window.shown.slice_index == 5 and window.worker.is_idle(), timeout=30000)
    assert window.controls.slice_spin.value() == 5 and "slice 5" in window.panels.titles[0].text


def test_ground_truth_loaded_separately_and_drop_opens(window, qtbot, env, errors):
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    shown = []
    window.result_shown.connect(shown.append)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(env["study"]))])
    ev = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier
    )
    window.dropEvent(ev)
    qtbot.waitUntil(lambda: bool(shown) and window.worker.is_idle(), timeout=30000)
    assert window.state.gt is None and window.controls.dice_label.text() == "Dice: n/a"
    assert window.load_mask(env["mask"])
    assert window.state.gt is not None and "Dice" in window.panels.titles[3].text
    assert (
        window.controls.dice_label.text().startswith("Dice: 0.") or window.controls.dice_label.text() == "Dice: 1.000"
    )
    bad = env["tmp"] / "small.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), str(bad))
    assert not window.load_mask(bad) and "differs" in errors[-1][1]


def test_window_level_presets_and_drag(window):
    window.state.apply_preset("CT bone")
    assert window.state.window == (2000.0, 400.0)
    assert tuple(window.panels.img_input.levels) == pytest.approx((-600.0, 1400.0))
    w0, l0 = window.state.window
    window.panels.window_drag.emit(50.0, -30.0)
    w1, l1 = window.state.window
    assert w1 > w0 and l1 > l0


def test_close_during_optimisation_is_quick(window, qtbot):
    from app.core.matchgen import SolverOptions

    window.session.detector.solver = SolverOptions(max_steps=10**6, patience=10**6, rtol=0.0)
    window.state.eps = 0.35
    qtbot.waitUntil(lambda: not window.worker.is_idle(), timeout=5000)
    qtbot.waitUntil(lambda: window.busy_label.text() == "working...", timeout=5000)
    time.sleep(0.3)
    assert not window.worker.is_idle()
    t0 = time.perf_counter()
    window.close()
    assert time.perf_counter() - t0 < 1.0
    assert not window.worker.isRunning() and not window.vworker.isRunning()


def test_corrupt_file_gives_a_dialog_and_the_app_lives_on(window, qtbot, env, errors):
    bad = env["tmp"] / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b this is not a gzip stream" * 10)
    before = window.state.study
    window.open_path(bad)
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    title, text = errors[0]
    assert "Cannot open" in title and "broken.nii.gz" in text
    assert window.state.study is before
    window.state.tau = 0.3  # still usable
    assert window.panels.img_det.image is not None
    shown = []
    window.result_shown.connect(shown.append)
    window.open_path(env["study"])
    qtbot.waitUntil(lambda: bool(shown), timeout=30000)


def test_unknown_model_is_a_dialog(window, errors):
    assert not window.set_model("no-such-model")
    assert errors and "no-such-model" in errors[-1][1]
    assert window.session.name == "tiny"


def test_whole_volume_run_and_save_mask(window, qtbot, env):
    import nibabel as nib

    out = env["tmp"] / "out" / "mask.nii.gz"
    out.parent.mkdir()
    window.save_mask(str(out))  # runs the volume first, then saves
    qtbot.waitUntil(out.exists, timeout=60000)
    assert window.controls.progress.value() == 100
    img = nib.load(str(out))
    study_img = nib.load(str(env["study"]))
    assert img.shape == study_img.shape
    np.testing.assert_allclose(img.affine, study_img.affine)
    eps, d = window.volume.eps, window.volume.d
    assert eps == pytest.approx(window.state.eps)
    expected = window.state.study.study.to_original(d > window.state.tau)
    np.testing.assert_array_equal(np.asarray(img.dataobj) > 0, expected)
    # every slice of the run is cached: browsing the volume needs no solver
    submitted = []
    window.worker.submit = lambda job: submitted.append(job)
    for k in range(6):
        window.state.slice_index = k
        assert window.shown.slice_index == k and window.shown.eps == pytest.approx(eps)
        np.testing.assert_allclose(window.shown.d, d[:, :, k])
    assert submitted == []


def test_cancel_volume_run(window, qtbot):
    from app.core.matchgen import SolverOptions

    window.session.detector.solver = SolverOptions(max_steps=10**6, patience=10**6, rtol=0.0)
    window.run_volume()
    qtbot.waitUntil(lambda: not window.vworker.is_idle(), timeout=5000)
    window.controls.cancel_button.click()
    qtbot.waitUntil(window.vworker.is_idle, timeout=3000)
    assert window.volume is None and window.controls.run_button.isEnabled()


def test_export_view_png_svg_pdf(window, env):
    for suffix in (".png", ".svg", ".pdf"):
        p = window.export_view(str(env["tmp"] / f"view{suffix}"))
        assert p.stat().st_size > 1000
    assert (env["tmp"] / "view.svg").read_text().lstrip().startswith("<?xml")
    assert (env["tmp"] / "view.pdf").read_bytes()[:4] == b"%PDF"


def test_export_figure_from_the_window(window, qtbot, env):
    out = env["tmp"] / "fig.svg"
    window.export_figure(["tiny", "tiny2"], str(out))
    qtbot.waitUntil(out.exists, timeout=60000)
    text = out.read_text()
    assert text.count("Dice ") == 4 and "tiny2 +MG" in text


def test_help_lists_shortcuts(window):
    text = window.shortcuts_text()
    keys = {a.shortcut().toString() for a in window.findChildren(type(window.menuBar().actions()[0]))}
    for k in ("Ctrl+O", "Ctrl+S", "Ctrl+E", "M", "F1"):
        assert k in text and k in keys


def test_probe_measures_tau_updates_and_stalls(window, qtbot):
    from app.bench.gui_probe import StallMeter, measure_worker_stall, process_until, time_tau_updates

    ms = time_tau_updates(window, np.linspace(0.05, 0.5, 10))
    assert len(ms) == 10 and all(0 < m < 1000 for m in ms)
    meter = StallMeter(5)
    meter.start()
    process_until(lambda: meter.ticks >= 3, 2.0)
    time.sleep(0.12)  # a known stall of the GUI thread
    process_until(lambda: meter.ticks >= 6, 2.0)
    assert meter.stop() >= 100
    res = measure_worker_stall(window, eps=0.33)
    assert res["finished"] and res["ticks"] > 0 and res["max_stall_ms"] >= 0
    assert window.shown.eps == pytest.approx(0.33)


def test_intermediate_pseudo_normals_appear_while_converging(window, qtbot):
    from app.core.matchgen import SolverOptions

    window.session.detector.solver = SolverOptions(max_steps=150, patience=10**6, rtol=0.0, callback_every=5)
    # every callback becomes a partial result: the tiny model's 150 steps can finish within the default 50 ms
    window.session.progress_interval_s = 0.0
    notes, partial_images = [], []
    label = window.controls.info_label
    label.setText = (lambda orig: lambda text: (notes.append(text), orig(text)))(label.setText)
    window.panels.set_pseudo = (lambda orig: lambda s: (partial_images.append(s), orig(s)))(window.panels.set_pseudo)
    window.state.eps = 0.3
    # the worker can be idle with its final result still queued for the GUI thread: wait for the final result
    # on screen (a partial one shows "converging" and fewer steps), not only for the worker
    qtbot.waitUntil(
        lambda: window.worker.is_idle() and window.shown.eps == pytest.approx(0.3) and window.shown.steps == 150,
        timeout=120000,
    )
    qtbot.waitUntil(lambda: "converging" not in notes[-1], timeout=5000)
    assert any("converging: step" in t for t in notes)
    assert len(partial_images) >= 2  # the pseudo-normal panel changed while the solver ran
    assert not np.allclose(partial_images[0], partial_images[-1])


def test_worker_failure_is_a_dialog_and_the_window_lives_on(window, qtbot, errors, monkeypatch):
    from app.errors import CheckpointError

    def broken(*a, **k):
        raise CheckpointError("decoder exploded")

    monkeypatch.setattr(window.session, "solve_slice", broken)
    window.state.eps = 0.4
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    assert errors[-1] == ("Computation failed", "decoder exploded")
    monkeypatch.undo()
    window.state.eps = 0.2  # cached: shown again at once
    assert window.shown.eps == pytest.approx(0.2)


def test_eps_grid_precomputed_so_the_slider_answers_at_once(window, qtbot):
    window.precompute_eps_grid = True
    window.ctl.eps_steps = window.controls.eps._steps = 5  # a coarse slider keeps the test short: 0.1, ..., 0.5
    window.controls.eps.set_range(0.0, window.state.eps_max)
    window.cache.clear()
    window.request()
    grid = window.ctl.eps_grid()
    k = window.state.slice_index
    qtbot.waitUntil(
        lambda: window.worker.is_idle() and all(window.cache.get("tiny", k, e) for e in grid), timeout=120000
    )
    gen = window.worker.generation
    assert grid == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    window.controls.eps.slider.setValue(4)
    assert window.shown.eps == pytest.approx(0.4) and window.shown.final and window.shown.precomputed
    assert "precomputed" in window.controls.info_label.text()
    # the precomputed value is the cold start that asking for 0.4 alone gives (what `detect` gives)
    np.testing.assert_allclose(window.shown.d, window.session.solve_slice(k, 0.4).d, atol=1e-5)
    # a value off the grid is solved from a cold start, exactly as `detect` would solve it
    window.controls.eps.spin.setValue(0.33)
    qtbot.waitUntil(lambda: window.shown.eps == pytest.approx(0.33) and window.shown.final, timeout=60000)
    cold = window.session.solve_slice(k, 0.33)
    assert not window.shown.precomputed
    np.testing.assert_allclose(window.shown.d, cold.d, atol=1e-6)
    assert window.worker.generation == gen or window.worker.is_idle()  # nothing to compute


def test_next_slice_solved_ahead_shows_at_once_on_a_key(window, qtbot):
    """With the neighbours solved ahead, the Up key shows the next slice from the cache: final, on the panels
    before any event loop turn, with the difference image of that slice's own solve."""
    from PySide6.QtCore import Qt

    window.prefetch_slices = True
    window.cache.clear()
    window.request()
    k = window.state.slice_index
    qtbot.waitUntil(
        lambda: window.worker.is_idle() and window.cache.get("tiny", k + 1, window.state.eps) is not None, timeout=60000
    )
    ahead = window.cache.get("tiny", k + 1, window.state.eps)
    qtbot.keyClick(window, Qt.Key.Key_Up)
    assert window.shown is ahead and window.shown.final and window.state.slice_index == k + 1
    np.testing.assert_allclose(window.panels.img_diff.image, ahead.d[::-1])  # drawn, not waiting for a solve
    assert window.timing_label.text().startswith("cached")
    np.testing.assert_allclose(ahead.d, window.session.solve_slice(k + 1, window.state.eps).d, atol=1e-6)


def test_crosshair_and_pixel_readout_follow_the_mouse(window):
    from PySide6.QtCore import QPointF

    sl, r = window.state.study, window.shown
    sx, sy = sl.study.spacing[:2]
    x, y = 10, 20  # the voxel to point at; the ImageItem shows X flipped
    ix = sl.slice_shape[0] - 1 - x
    vb = window.panels.views[2]  # hover over the difference panel: all panels follow
    scene_pos = vb.mapViewToScene(QPointF((ix + 0.5) * sx, (y + 0.5) * sy))
    window.panels.scene().sigMouseMoved.emit(scene_pos)
    text = window.readout.text()
    assert f"voxel ({x}, {y}, {window.state.slice_index})" in text
    assert f"D {r.d[x, y]:.3f}" in text
    for v, h in window.panels.cross:
        assert v.isVisible() and v.value() == pytest.approx((ix + 0.5) * sx)
        assert h.value() == pytest.approx((y + 0.5) * sy)
    window.panels.scene().sigMouseMoved.emit(QPointF(-500, -500))
    assert window.readout.text() == "" and not window.panels.cross[0][0].isVisible()


def test_new_slice_shows_its_base_result_while_matchgen_runs(window, qtbot):
    from app.core.matchgen import SolverOptions

    window.session.detector.solver = SolverOptions(max_steps=10**6, patience=10**6, rtol=0.0)
    window.state.slice_index = 4
    qtbot.waitUntil(lambda: window.shown.slice_index == 4, timeout=10000)
    assert window.shown.eps == 0.0 and not window.worker.is_idle()  # base on screen, +MG still running
    assert "+MG running" in window.controls.info_label.text()
    window.worker.cancel()


def test_file_open_action_and_recent_menu(window, qtbot, env, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    other = env["tmp"] / "other"
    from viewer_study import write_study

    study2, _ = write_study(other, shape=(30, 30, 3))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(study2), "")))
    shown = []
    window.result_shown.connect(shown.append)
    open_action = next(a for a in window.menuBar().actions()[0].menu().actions() if "Open study" in a.text())
    open_action.trigger()
    qtbot.waitUntil(lambda: bool(shown) and window.state.study.slice_shape == (30, 30), timeout=30000)
    assert window.recent_files()[:2] == [str(study2), str(env["study"])]
    recent = [a.text() for a in window.recent_menu.actions()]
    assert recent[:2] == [str(study2), str(env["study"])]
    window.recent_menu.actions()[1].trigger()  # back to the first study through the Recent menu
    qtbot.waitUntil(lambda: window.state.study.slice_shape == (40, 48), timeout=30000)


def test_model_picker_switches_model_and_takes_its_card(window, qtbot):
    box = window.controls.model_box
    assert [box.itemText(i) for i in range(box.count())] == ["tiny", "tiny2"]
    shown = []
    window.result_shown.connect(shown.append)
    box.setCurrentIndex(1)
    box.activated.emit(1)
    assert window.session.name == "tiny2" and window.state.model_name == "tiny2"
    assert window.state.eps_max == 0.5 and window.state.tau == pytest.approx(0.15)
    qtbot.waitUntil(lambda: bool(shown) and shown[-1].model == "tiny2" and window.worker.is_idle(), timeout=30000)
    assert window.shown.model == "tiny2"


def test_precompute_covers_the_cards_grid(window, qtbot):
    window.precompute_eps_grid = True
    window.session.eps_grid = [0.0, 0.25, 0.5]  # as a calibrated card names it
    window.cache.clear()
    window.request()
    k = window.state.slice_index
    qtbot.waitUntil(window.worker.is_idle, timeout=120000)
    cached = sorted(e for (m, kk, e) in window.cache.keys() if kk == k and e > 0)
    assert cached == [0.2, 0.25, 0.5]  # the shown value and the card's grid, not all 30 slider positions
    window.controls.eps.slider.setValue(15)  # 15 / 30 * 0.5 = 0.25: answered from the cache
    assert window.shown.eps == pytest.approx(0.25) and window.shown.precomputed


def test_fine_grid_values_near_zero_snap_to_distinct_slider_positions(window):
    step = window.controls.eps.step_size
    assert step == pytest.approx(window.ctl.eps_step)
    window.session.eps_grid = [0.0, step / 4, step / 2, step, 5 * step]  # halvings of a grid step, as calibrate adds
    grid = window.ctl.eps_grid()
    assert grid == sorted(set(grid)) and all(e > 0 for e in grid)
    assert grid == pytest.approx([step, 5 * step])


def test_an_ensemble_card_is_picked_like_a_model_and_shown(window, env, qtbot):
    """An ensemble card in the zoo folder is in the model picker; picked, the slice is solved through it (tau and eps
    from its card: eps is a factor of each member's own) and the detection panel shows exactly D > tau or truth."""
    from viewer_study import write_ensemble

    from app.core.ensemble import EnsembleDetector

    models = env["models"]
    write_ensemble(models / "pair.json", [("tiny", 0.3), ("tiny2", 0.1)], eps=0.2, tau=0.12, tau_base=0.2)
    window.refresh_model_list()
    box = window.controls.model_box
    assert [box.itemText(i) for i in range(box.count())] == ["tiny", "tiny2", "pair"]
    shown = []
    window.result_shown.connect(shown.append)
    box.setCurrentIndex(2)
    box.activated.emit(2)
    assert isinstance(window.session.detector, EnsembleDetector)
    assert window.state.eps == 1.0 and window.state.tau == pytest.approx(0.12)
    qtbot.waitUntil(lambda: bool(shown) and shown[-1].model == "pair" and window.worker.is_idle(), timeout=60000)
    r, gt = window.shown, window.state.study.gt_slice(window.state.slice_index)
    assert r.model == "pair" and r.d.max() > 0
    assert window.panels.titles[1].text.startswith("Pseudo-normal of tiny - pair +MG eps=1")  # whose image it is
    assert np.count_nonzero(overlay_alpha(window)) == np.count_nonzero((r.d > 0.12) | gt)
