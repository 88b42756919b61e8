import asyncio

import pytest
from viewer_study import write_model, write_study


@pytest.fixture(scope="session")
def qloop(qapp):
    """A qasync event loop on the test QApplication, as ``run_viewer`` sets up (studies load through it)."""
    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A synthetic study + mask and a tiny model zoo in tmp_path; QSettings (recent files) in tmp_path."""
    from PySide6.QtCore import QSettings

    import app.nets.zoo as zoo

    study, mask = write_study(tmp_path / "study")
    models = tmp_path / "models"
    write_model(models, "tiny")
    write_model(models, "tiny2", seed=1)
    monkeypatch.setattr(zoo, "MODELS_DIR", models)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    return {"study": study, "mask": mask, "models": models, "tmp": tmp_path}


@pytest.fixture
def errors(monkeypatch):
    """Dialogs captured instead of shown (a modal box would block the offscreen test)."""
    from PySide6.QtWidgets import QMessageBox

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        QMessageBox, "critical", staticmethod(lambda parent, title, text, *a, **k: seen.append((title, text)))
    )
    return seen


@pytest.fixture
def window(qtbot, qloop, env, errors):
    """The main window with the synthetic study, its mask and the tiny model, first +MG result shown."""
    from app.gui.window import MainWindow

    win = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(win)
    win.show()
    assert win.set_model("tiny")
    shown = []
    win.result_shown.connect(shown.append)
    win.open_path(env["study"], env["mask"])
    qtbot.waitUntil(lambda: bool(shown) and shown[-1].eps == win.state.eps and win.worker.is_idle(), timeout=60000)
    yield win
    win.close()
