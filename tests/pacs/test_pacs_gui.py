"""The viewer's PACS dialogs against the real Orthanc (offscreen): search fills a sortable study table, a
double-click retrieves the series in the background and opens it, Save as DICOM SEG writes a SEG that File > Load
segmentation reads back as the ground truth, Send result to PACS stores it on the server; errors are dialogs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from orthanc import PASSWORD, USER

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def qloop(qapp):
    import qasync

    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def errors(monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        QMessageBox, "critical", staticmethod(lambda parent, title, text, *a, **k: seen.append((title, text)))
    )
    return seen


@pytest.fixture
def window(qtbot, qloop, tmp_path, monkeypatch, settings_dir, errors, orthanc):
    from viewer_study import write_model

    import app.nets.zoo as zoo
    from app.gui.pacs_dialog import settings_store
    from app.gui.window import MainWindow
    from app.pacs import parse_server

    monkeypatch.setenv("MATCHGEN_PACS_CACHE", str(tmp_path / "cache"))
    write_model(tmp_path / "models", "tiny", size=16)
    monkeypatch.setattr(zoo, "MODELS_DIR", tmp_path / "models")
    cfg = parse_server(orthanc.url, username=USER, password=PASSWORD, timeout=10)
    from dataclasses import replace

    settings_store().put(replace(cfg, name="orthanc-web"), remember_password=True)
    settings_store().put(replace(parse_server(orthanc.dimse, timeout=10), name="orthanc-dimse"))
    win = MainWindow(device="cpu", precompute_eps_grid=False)
    qtbot.addWidget(win)
    win.show()
    assert win.set_model("tiny")
    yield win
    win.close()


@pytest.mark.parametrize("server_name", ["orthanc-web", "orthanc-dimse"])
def test_open_from_pacs_save_seg_load_it_and_send(window, qtbot, orthanc, tmp_path, errors, server_name):
    from PySide6.QtCore import Qt

    from app.gui.pacs_dialog import open_from_pacs, send_result
    from app.io.seg import read_seg

    assert any(a.text() == "Open from &PACS..." for a in window.menus["&File"].actions())
    browser = open_from_pacs(window)
    browser.server.setCurrentText(server_name)
    browser.patient_id.setText("mg-send")
    qtbot.mouseClick(browser.search_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: browser.studies.rowCount() == 1, timeout=20000)
    row = [browser.studies.item(0, j).text() for j in range(browser.studies.columnCount())]
    assert row[0] == "MG^Send" and row[1] == "mg-send" and row[3] == "20240220" and "MR" in row[4]
    assert row[5] == "detect and send" and browser.studies.isSortingEnabled()
    # double-click: the study's one image series is retrieved in the background and opened
    opened = []
    window.ctl.events.study_opened.connect(opened.append)
    browser._study_double_clicked(0, 0)
    qtbot.waitUntil(lambda: bool(opened), timeout=60000)
    assert browser.series.rowCount() >= 1 and not errors
    sl = window.state.study
    assert sl.study.meta.get("SeriesInstanceUID") == orthanc.series["send"]
    # Save as DICOM SEG (the volume runs first), then load it back as the ground truth
    saved = []
    window.ctl.events.saved.connect(saved.append)
    out = tmp_path / "seg.dcm"
    window.save_mask(str(out))
    qtbot.waitUntil(lambda: bool(saved), timeout=120000)
    seg_mask = read_seg(out, sl.study)
    assert seg_mask.shape == sl.study.shape
    assert window.load_mask(str(out))
    np.testing.assert_array_equal(window.state.study.gt, seg_mask)
    # Send result to PACS: to the server the study came from
    before = len([s for s in orthanc.server.series_of_study(orthanc.studies["send"])
                  if s["MainDicomTags"].get("Modality") == "SEG"])
    send_result(window)
    qtbot.waitUntil(lambda: getattr(window, "_pacs_last_send", None) is not None, timeout=60000)
    assert window._pacs_last_send[0] == "ok", window._pacs_last_send
    after = [s for s in orthanc.server.series_of_study(orthanc.studies["send"])
             if s["MainDicomTags"].get("Modality") == "SEG"]
    assert len(after) == before + 1


def test_browser_errors_are_dialogs_and_non_image_series_refused(window, qtbot, orthanc, errors):
    from app.gui.pacs_dialog import open_from_pacs
    from app.pacs.model import SeriesInfo

    browser = open_from_pacs(window)
    browser.server.setCurrentText("orthanc-web")
    browser.retrieve(SeriesInfo(orthanc.studies["two-a"], orthanc.series["two-sr"], modality="SR"))
    assert errors and "not images" in errors[-1][1]
    browser.retrieve(SeriesInfo("1.2.3.4", "1.2.3.4.5", modality="MR"))
    qtbot.waitUntil(lambda: len(errors) >= 2, timeout=20000)
    assert "is not on" in errors[-1][1]
    assert window.state.study is None  # nothing opened


def test_server_settings_dialog_saves_without_password(window, qtbot, orthanc):
    from app.gui.pacs_dialog import ServerSettingsDialog, settings_store

    d = ServerSettingsDialog(window)
    qtbot.addWidget(d)
    d.saved.setCurrentText("(new server)")
    d.name.setText("typed")
    d.protocol.setCurrentText("dicomweb")
    d.url.setText(orthanc.url)
    d.user.setText(USER)
    d.password.setText(PASSWORD)
    d.remember.setChecked(False)
    assert d.save()
    saved = settings_store().get("typed")
    assert saved is not None and saved.username == USER and saved.password == ""
    d.test()
    qtbot.waitUntil(lambda: d.test_button.isEnabled() and d.status.text() != "", timeout=20000)
    assert "answers" in d.status.text()
    assert PASSWORD not in d.status.text()
