"""The window on top of the controller, offscreen: clicks, rendered pixels, timings, the lanes."""

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def panel_pixels(win, i: int) -> np.ndarray:
    """The rendered pixels (H, W, 3) of panel i (0 input, 1 pseudo-normal, 2 difference, 3 detection)."""
    from PySide6.QtCore import QRectF

    win.panels.viewport().repaint()
    img = win.panels.grab().toImage()
    vb = win.panels.views[i]
    r: QRectF = vb.mapRectToScene(vb.boundingRect())
    ratio = img.devicePixelRatio()
    x0, y0 = int(r.left() * ratio) + 2, int(r.top() * ratio) + 2
    x1, y1 = int(r.right() * ratio) - 2, int(r.bottom() * ratio) - 2
    from PySide6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
    arr = arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
    return arr[y0:y1, x0:x1].astype(int)


def count(px: np.ndarray, rgb) -> int:
    return int((np.abs(px - np.asarray(rgb)).sum(axis=-1) <= 6).sum())


def test_plus_mg_click_renders_the_cached_base_at_once_with_this_requests_timing(window, qtbot):
    from PySide6.QtCore import Qt

    t = [5000.0]
    window.ctl.clock = lambda: t[0]
    window.state.overlay_opacity = 1.0
    mg = window.shown
    red_mg = count(panel_pixels(window, 3), (255, 0, 0))
    # +MG off: the base result was computed on the way; what the status bar says is the time of this click
    t[0] += 56.11
    submitted = window.worker.generation
    qtbot.mouseClick(window.controls.mg_check, Qt.MouseButton.LeftButton)
    assert not window.state.use_mg and window.shown.eps == 0.0
    assert window.worker.generation in (submitted, submitted + 1)  # at most a cancel, no new solve needed
    assert window.timing_label.text().endswith("shown after 0.00 s")
    assert "(base)" in window.panels.titles[1].text
    base = window.shown
    np.testing.assert_allclose(window.panels.img_pseudo.image, base.s[::-1])
    px = panel_pixels(window, 3)
    tp = base.d > window.state.tau
    gt = window.state.study.gt_slice(window.state.slice_index)
    assert (tp & gt).any() and count(px, (255, 0, 0)) > 0  # TP pixels rendered red
    assert (tp & ~gt).any() and count(px, (0, 0, 255)) > 0  # FP blue
    t[0] += 20.0
    qtbot.mouseClick(window.controls.mg_check, Qt.MouseButton.LeftButton)
    assert window.shown is mg and window.timing_label.text().endswith("shown after 0.00 s")
    assert count(panel_pixels(window, 3), (255, 0, 0)) == red_mg  # the same picture as before


def test_tau_to_one_turns_true_positives_into_green_misses_on_screen(window):
    window.state.overlay_opacity = 1.0
    before = panel_pixels(window, 3)
    assert count(before, (255, 0, 0)) > 0
    window.controls.tau.spin.setValue(1.0)
    after = panel_pixels(window, 3)
    assert count(after, (255, 0, 0)) == 0 and count(after, (0, 0, 255)) == 0
    assert count(after, (0, 255, 0)) >= count(before, (255, 0, 0))  # every lesion pixel is now a miss


def test_export_does_not_touch_the_volume_run(window, qtbot, env, errors):
    from app.core.matchgen import SolverOptions

    window.session.detector.solver = SolverOptions(max_steps=10**6, patience=10**6, rtol=0.0)
    mask = env["tmp"] / "mask.nii.gz"
    window.save_mask(str(mask))  # runs the volume first; the save waits for it
    qtbot.waitUntil(lambda: not window.vworker.is_idle(), timeout=5000)
    vgen = window.vworker.generation
    fig = env["tmp"] / "fig.svg"
    window.export_figure(["tiny"], str(fig))
    qtbot.waitUntil(fig.exists, timeout=60000)
    qtbot.waitUntil(lambda: window.ctl.export_job is None, timeout=5000)
    assert window.vworker.generation == vgen and not window.vworker.is_idle()  # still running
    assert window.controls.cancel_button.isEnabled() and not window.controls.run_button.isEnabled()
    assert window.ctl.volume_run.save_path == str(mask)
    assert window.figure_action.isEnabled()
    window.export_figure(["no-such-model"], str(env["tmp"] / "bad.svg"))
    qtbot.waitUntil(lambda: bool(errors), timeout=10000)
    assert errors[-1][0] == "Figure export failed" and "no-such-model" in errors[-1][1]
    assert not window.vworker.is_idle()
    window.controls.cancel_button.click()
    qtbot.waitUntil(window.vworker.is_idle, timeout=5000)
    assert window.ctl.volume_run is None and not mask.exists()
    assert [t for t, _ in errors] == ["Figure export failed"]


def test_study_is_prepared_off_the_gui_thread_once_per_model_input(qtbot, qloop, env, errors, monkeypatch):
    import app.data.pipeline as pipeline
    from app.gui.window import MainWindow

    threads = []
    real = pipeline.prepare_study

    def recording(*a, **k):
        threads.append(threading.current_thread())
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "prepare_study", recording)
    win = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(win)
    win.show()
    assert win.set_model("tiny")
    shown = []
    win.result_shown.connect(shown.append)
    win.open_path(env["study"], env["mask"])
    qtbot.waitUntil(lambda: bool(shown) and win.worker.is_idle(), timeout=60000)
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    win.controls.model_box.setCurrentIndex(1)
    win.controls.model_box.activated.emit(1)  # tiny2: the same input format
    assert win.session.name == "tiny2"
    qtbot.waitUntil(lambda: shown[-1].model == "tiny2" and win.worker.is_idle(), timeout=60000)
    assert len(threads) == 1  # cached per model input: the model switch prepared nothing
    assert not errors
    win.close()


def test_extension_points_menu_and_dock(window):
    from PySide6.QtWidgets import QLabel

    hits = []
    a = window.add_action("&Worklist", "Next study", lambda: hits.append(1), "Ctrl+N", help="next study")
    titles = [m.title() for m in (act.menu() for act in window.menuBar().actions()) if m is not None]
    assert titles == ["&File", "&View", "&Run", "&Worklist", "&Help"]
    a.trigger()
    assert hits == [1] and "next study" in window.shortcuts_text()
    dock = window.add_dock(QLabel("findings"), "Findings")
    assert dock.toggleViewAction() in window.panels_menu.actions()
    seen = []
    window.ctl.events.result.connect(seen.append)
    window.state.tau = 0.3  # a re-threshold is no new result
    window.state.slice_index = 0
    assert window.ctl.want.key[1] == 0


@pytest.mark.parametrize("native", [False, True])
def test_the_status_bar_says_when_the_search_runs_in_float32(window, env, monkeypatch, native):
    """A card asking for bfloat16 search steps on a CPU without bfloat16 arithmetic: the device label says the
    search runs in float32, with the reason as tooltip; on a CPU with it, or for a float32 card, it says nothing."""
    import json

    import torch

    from app.solver_options import FAST

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    plain = window.device_label.text()
    assert "float32" not in plain and window.device_label.toolTip() == ""  # the tiny card: the paper's float32
    card = json.loads((env["models"] / "tiny2.json").read_text())
    card["calibration"] = {"settings": {"max_steps": 5, "solver_options": FAST.__dict__}}
    (env["models"] / "tiny2.json").write_text(json.dumps(card))
    assert window.set_model("tiny2")
    if native:
        assert window.device_label.text() == plain and window.device_label.toolTip() == ""
    else:
        assert window.device_label.text() == f"{plain}, float32 search"
        assert window.device_label.toolTip().startswith("float32 search steps instead of the card's bfloat16")
    assert window.set_model("tiny")  # back to a float32 card
    assert window.device_label.text() == plain
