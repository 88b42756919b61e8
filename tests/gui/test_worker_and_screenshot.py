"""The worker thread on its own (newest request wins, cancellation, failures) and the --screenshot path."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from viewer_study import write_model, write_study

from app.errors import StudyError

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(qapp):
    from app.gui.worker import SolveWorker

    w = SolveWorker("test")
    w.start()
    yield w
    assert w.stop(2000)


def test_newest_request_wins_and_stale_jobs_stop(worker, qtbot):
    started, stopped, reports = [], [], []
    worker.report.connect(lambda g, kind, p: reports.append((g, kind, p)))
    gate = threading.Event()

    def slow(ctx):
        started.append(ctx.gen)
        gate.set()
        while not ctx.should_stop():
            time.sleep(0.001)
        stopped.append(ctx.gen)
        ctx.emit("final", "stale")

    g1 = worker.submit(slow)
    assert gate.wait(2)
    g2 = worker.submit(lambda ctx: ctx.emit("final", "never"))  # replaced before it starts
    g3 = worker.submit(lambda ctx: ctx.emit("final", "newest"))
    assert g1 < g2 < g3 == worker.generation
    qtbot.waitUntil(lambda: any(p == "newest" for _, _, p in reports), timeout=3000)
    qtbot.waitUntil(worker.is_idle, timeout=3000)
    assert started == [g1] and stopped == [g1]
    assert "never" not in [p for _, _, p in reports]
    # the stale job's report carries its old generation, so the GUI can drop it
    assert (g1, "final", "stale") in reports and (g3, "final", "newest") in reports


def test_failures_are_reported_not_raised(worker, qtbot):
    failed = []
    worker.failed.connect(lambda g, msg: failed.append(msg))

    def bad(ctx):
        raise StudyError("the study has no slices")

    def bug(ctx):
        raise ZeroDivisionError("oops")

    worker.submit(bad)
    qtbot.waitUntil(lambda: len(failed) == 1, timeout=3000)
    worker.submit(bug)
    qtbot.waitUntil(lambda: len(failed) == 2, timeout=3000)
    assert failed[0] == "the study has no slices"
    assert failed[1].startswith("internal error in the worker: ZeroDivisionError: oops")
    done = []
    worker.submit(lambda ctx: done.append(ctx.gen))  # the thread is still alive
    qtbot.waitUntil(lambda: bool(done), timeout=3000)


def test_background_follow_up_runs_only_while_nothing_newer_waits(worker, qtbot):
    ran = []

    def job(ctx):
        ran.append("fg")
        ctx.follow_up.append(lambda c: ran.append("bg"))

    worker.submit(job)
    qtbot.waitUntil(lambda: ran == ["fg", "bg"], timeout=3000)
    qtbot.waitUntil(worker.is_idle, timeout=3000)


def test_screenshot_command_renders_a_real_window(tmp_path):
    """``python main.py view STUDY --mask GT --model M --screenshot PNG``: exit 0 and a non-blank picture with the
    Figure-2 colours in the detection panel."""
    from PySide6.QtGui import QColor, QImage

    study, mask = write_study(tmp_path / "s")
    write_model(tmp_path / "models", "tiny")
    out = tmp_path / "shot.png"
    env = {**os.environ, "MATCHGEN_MODELS": str(tmp_path / "models"), "QT_QPA_PLATFORM": "offscreen"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    cmd = [sys.executable, str(ROOT / "main.py"), "view", str(study), "--mask", str(mask), "--model", "tiny"]
    p = subprocess.run(
        [*cmd, "--screenshot", str(out), "--device", "cpu"], env=env, capture_output=True, text=True, timeout=180
    )
    assert p.returncode == 0, p.stderr
    img = QImage(str(out))
    assert img.width() >= 800 and img.height() >= 600
    colours = set()
    red = 0
    for y in range(0, img.height(), 3):
        for x in range(0, img.width(), 3):
            c = img.pixelColor(x, y)
            colours.add(c.rgb())
            red += c.red() > 180 and c.green() < 90 and c.blue() < 90
    assert len(colours) > 200  # not blank: greys, the colour map, widgets
    assert red > 20  # true positives drawn in red over the input
    assert QColor(img.pixelColor(5, img.height() // 2)).isValid()


def test_screenshot_with_missing_model_exits_2(tmp_path):
    study, mask = write_study(tmp_path / "s")
    env = {**os.environ, "MATCHGEN_MODELS": str(tmp_path / "none"), "QT_QPA_PLATFORM": "offscreen"}
    out = tmp_path / "shot.png"
    p = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "view", str(study), "--screenshot", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert "error" in p.stderr and "not found" in p.stderr
    assert not out.exists()


def test_closing_while_a_study_loads_exits_cleanly(tmp_path):
    """The window closes at once while the loader thread still reads; the process then ends with code 0."""
    study, _ = write_study(tmp_path / "s", shape=(64, 64, 40))
    code = f"""
import asyncio, sys, time
import qasync
from PySide6.QtWidgets import QApplication
from app.gui.window import MainWindow
from app.bench.gui_probe import process_until
app = QApplication([])
asyncio.set_event_loop(qasync.QEventLoop(app))
win = MainWindow(device="cpu")
win.show()
win.open_path({str(study)!r})
process_until(lambda: False, 0.05)  # the loader thread is reading now
t0 = time.perf_counter()
win.close()
assert time.perf_counter() - t0 < 1.0
process_until(lambda: False, 0.2)
print("closed")
"""
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "MATCHGEN_MODELS": str(tmp_path / "none")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "cfg")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "closed" in p.stdout and "Destroyed while thread" not in p.stderr


def test_no_display_is_a_clear_error_not_a_crash(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    p = subprocess.run([sys.executable, str(ROOT / "main.py")], env=env, capture_output=True, text=True, timeout=60)
    if not sys.platform.startswith("linux"):
        pytest.skip("display detection is for Linux")
    assert p.returncode == 2
    assert p.stderr.startswith("matchgen view: error: no display") and len(p.stderr.strip().splitlines()) == 1
