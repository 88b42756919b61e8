"""Starting the viewer: a QApplication with a qasync event loop (asyncio inside Qt), the main window, the study
(or the bundled demo) and the default model; ``--screenshot`` saves the window after the first result."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from app.bundled import bundled_dir

ICON = bundled_dir("icons") / "matchgen.png"


def save_screenshot(widget, path: str | os.PathLike) -> Path:
    """The widget as PNG, written to a temporary file and renamed."""
    from app.figure.output import atomic_output

    p = Path(path)
    with atomic_output(p) as tmp:
        if not widget.grab().save(tmp, "PNG"):
            raise OSError(f"cannot write {p}")
    return p


def run_viewer(
    study: str | None = None,
    mask: str | None = None,
    model: str | None = None,
    screenshot: str | None = None,
    device: str = "auto",
    timeout_s: float = 600.0,
) -> int:
    import qasync
    from PySide6.QtCore import QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from app.errors import MatchGenError
    from app.gui.window import MainWindow
    from app.nets.zoo import DEFAULT_MODEL
    from app.viewer.loading import demo_paths

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("MatchGen Viewer")
    if ICON.is_file():
        app.setWindowIcon(QIcon(str(ICON)))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    headless = screenshot is not None
    win = MainWindow(
        device=device, exit_on_error=headless, precompute_eps_grid=not headless, prefetch_slices=not headless
    )
    done = asyncio.Event()
    win.destroyed.connect(lambda *_: done.set())
    app.lastWindowClosed.connect(done.set)

    if headless:
        shot = {"taken": False}

        def take(_r=None) -> None:
            if shot["taken"]:
                return
            shot["taken"] = True

            def save() -> None:
                try:
                    out = save_screenshot(win, screenshot)
                    print(f"wrote {out}")
                except (OSError, MatchGenError) as exc:
                    sys.stderr.write(f"matchgen view: error: {exc}\n")
                    win.exit_code = 2
                win.close()

            QTimer.singleShot(300, save)

        win.result_shown.connect(take)

        def too_slow() -> None:
            if not shot["taken"]:
                win.show_error("Timeout", f"no result within {timeout_s:.0f} s")

        QTimer.singleShot(int(timeout_s * 1000), too_slow)

    win.show()
    if study is None:
        try:
            study_path, demo_mask = demo_paths()
            study, mask = str(study_path), mask or (str(demo_mask) if demo_mask else None)
        except MatchGenError as exc:
            win.show_error("No demo study", str(exc))
    if win.exit_code == 0:
        win.set_model(model or DEFAULT_MODEL)
    if study is not None and win.exit_code == 0:
        win.open_path(study, mask)
    with loop:
        loop.run_until_complete(done.wait())
    return win.exit_code
