"""The viewer's PACS dialogs: File > Open from PACS (search, a sortable study table, the study's series,
retrieval in the background with progress and cancel), File > Send result to PACS, File > Load segmentation
(DICOM SEG), File > Save as DICOM SEG, and File > PACS servers (settings kept with QSettings, shared with
``python main.py pacs servers``; the retrieval cache shown and cleared there).

Only showing and asking lives here: searching, retrieving, caching and sending are :mod:`app.pacs`; the SEG is
:mod:`app.io.seg`; saving goes through the controller. Network work runs on a Python thread; its results come
back to the GUI thread through queued signals, and a result for a closed dialog or an older request is dropped.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from PySide6.QtCore import QObject, QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.errors import Cancelled, MatchGenError
from app.pacs import Query, ServerConfig, ServerStore, connect
from app.pacs.cache import RetrievalCache
from app.pacs.config import APP, ORG, STORE_KEY
from app.pacs.model import SERIES_COLUMNS, STUDY_COLUMNS, SeriesInfo, StudyInfo, date_range

QUEUED = Qt.ConnectionType.QueuedConnection


def settings_store() -> ServerStore:
    """The saved servers in the viewer's QSettings (the same key ``python main.py pacs servers`` uses)."""

    def qs() -> QSettings:
        return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORG, APP)

    def load():
        v = qs().value(STORE_KEY)
        return str(v) if v else None

    def save(text: str) -> None:
        s = qs()
        s.setValue(STORE_KEY, text)
        s.sync()

    return ServerStore(load, save)


#: passwords typed this session (not saved): server name -> password, kept in memory only
_SESSION_PASSWORDS: dict[str, str] = {}


def with_session_password(cfg: ServerConfig) -> ServerConfig:
    if not cfg.password and cfg.name in _SESSION_PASSWORDS:
        return cfg.with_password(_SESSION_PASSWORDS[cfg.name])
    return cfg


class Task(QObject):
    """``fn(progress, cancelled)`` on a Python thread; ``done``/``failed``/``progress`` arrive on the GUI thread."""

    progress = Signal(int, object)
    done = Signal(object)
    failed = Signal(str)
    cancelled = Signal(str)

    def __init__(self, fn, parent=None):
        super().__init__(parent)
        self.fn = fn
        self.cancel_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> Task:
        self.thread = threading.Thread(target=self._run, daemon=True, name="matchgen-pacs")
        self.thread.start()
        return self

    def cancel(self) -> None:
        self.cancel_event.set()

    def is_running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _run(self) -> None:
        try:
            result = self.fn(lambda d, t: self.progress.emit(int(d), t), self.cancel_event.is_set)
        except Cancelled as exc:
            self.cancelled.emit(str(exc))
        except MatchGenError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - shown as a dialog, not a crash of the viewer
            self.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.done.emit(result)


def _table(columns: list[str]) -> QTableWidget:
    t = QTableWidget(0, len(columns))
    t.setHorizontalHeaderLabels(columns)
    t.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    t.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    t.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    t.setSortingEnabled(True)
    t.horizontalHeader().setStretchLastSection(True)
    t.verticalHeader().setVisible(False)
    return t


class _Item(QTableWidgetItem):
    """Sorts numbers as numbers (Series, Images)."""

    def __lt__(self, other):  # noqa: D105
        a, b = self.text(), other.text()
        if a.isdigit() and b.isdigit():
            return int(a) < int(b)
        return a < b


def _fill(table: QTableWidget, rows: list[list[str]], payload: list) -> None:
    table.setSortingEnabled(False)
    table.setRowCount(len(rows))
    for i, (row, obj) in enumerate(zip(rows, payload, strict=True)):
        for j, text in enumerate(row):
            item = _Item(text)
            item.setData(Qt.ItemDataRole.UserRole, obj)
            table.setItem(i, j, item)
    table.setSortingEnabled(True)
    table.resizeColumnsToContents()


def _row_object(table: QTableWidget, row: int):
    item = table.item(row, 0)
    return item.data(Qt.ItemDataRole.UserRole) if item is not None else None


class ServerSettingsDialog(QDialog):
    """Saved servers: edit, test (echo in the background), save (password only if asked), delete; the cache."""

    def __init__(self, parent=None, store: ServerStore | None = None, cache: RetrievalCache | None = None):
        super().__init__(parent)
        self.setWindowTitle("PACS servers")
        self.store = store or settings_store()
        self.cache = cache or RetrievalCache()
        self.task: Task | None = None
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        self.saved = QComboBox()
        self.saved.currentTextChanged.connect(self._show_saved)
        top.addWidget(QLabel("Saved:"))
        top.addWidget(self.saved, 1)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete)
        top.addWidget(self.delete_button)
        lay.addLayout(top)
        form = QFormLayout()
        self.name = QLineEdit()
        self.protocol = QComboBox()
        self.protocol.addItems(["dicomweb", "dimse"])
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://localhost:8042/dicom-web")
        self.host = QLineEdit()
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(104)
        self.called_ae = QLineEdit()
        self.calling_ae = QLineEdit("MATCHGEN")
        self.user = QLineEdit()
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.remember = QCheckBox("Save the password in the settings file (plain text, readable by your account)")
        self.ca_file = QLineEdit()
        browse = QPushButton("...")
        browse.clicked.connect(self._browse_ca)
        ca_row = QHBoxLayout()
        ca_row.addWidget(self.ca_file, 1)
        ca_row.addWidget(browse)
        ca_box = QWidget()
        ca_box.setLayout(ca_row)
        self.timeout = QDoubleSpinBox()
        self.timeout.setRange(1, 3600)
        self.timeout.setValue(30)
        self.timeout.setSuffix(" s")
        for label, w in [
            ("Name", self.name),
            ("Protocol", self.protocol),
            ("DICOMweb URL", self.url),
            ("DIMSE host", self.host),
            ("DIMSE port", self.port),
            ("Called AE title", self.called_ae),
            ("Calling AE title", self.calling_ae),
            ("User", self.user),
            ("Password", self.password),
            ("", self.remember),
            ("CA file (HTTPS)", ca_box),
            ("Timeout", self.timeout),
        ]:
            form.addRow(label, w)
        lay.addLayout(form)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        buttons = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test)
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        buttons.addWidget(self.test_button)
        buttons.addWidget(self.save_button)
        lay.addLayout(buttons)
        cache_row = QHBoxLayout()
        self.cache_label = QLabel("")
        self.cache_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        clear = QPushButton("Clear cache")
        clear.clicked.connect(self.clear_cache)
        cache_row.addWidget(self.cache_label, 1)
        cache_row.addWidget(clear)
        lay.addLayout(cache_row)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        lay.addWidget(close)
        self._reload()
        self._show_cache()

    def _reload(self, select: str | None = None) -> None:
        self.saved.blockSignals(True)
        self.saved.clear()
        self.saved.addItems(["(new server)", *self.store.names()])
        self.saved.blockSignals(False)
        if select:
            self.saved.setCurrentText(select)
        self._show_saved(self.saved.currentText())

    def _show_saved(self, name: str) -> None:
        cfg = self.store.get(name) if name and name != "(new server)" else None
        cfg = with_session_password(cfg) if cfg is not None else ServerConfig()
        self.name.setText(cfg.name)
        self.protocol.setCurrentText(cfg.protocol)
        self.url.setText(cfg.url)
        self.host.setText(cfg.host)
        self.port.setValue(int(cfg.port))
        self.called_ae.setText(cfg.called_ae)
        self.calling_ae.setText(cfg.calling_ae)
        self.user.setText(cfg.username)
        self.password.setText(cfg.password)
        self.remember.setChecked(bool(cfg.password) and cfg.name not in _SESSION_PASSWORDS)
        self.ca_file.setText(cfg.ca_file)
        self.timeout.setValue(float(cfg.timeout))

    def _browse_ca(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "CA certificate", "", "PEM (*.pem *.crt *.cer);;All files (*)")
        if path:
            self.ca_file.setText(path)

    def config(self) -> ServerConfig:
        return ServerConfig(
            name=self.name.text().strip(),
            protocol=self.protocol.currentText(),
            url=self.url.text().strip().rstrip("/"),
            host=self.host.text().strip(),
            port=self.port.value(),
            called_ae=self.called_ae.text().strip(),
            calling_ae=self.calling_ae.text().strip() or "MATCHGEN",
            username=self.user.text().strip(),
            password=self.password.text(),
            ca_file=self.ca_file.text().strip(),
            timeout=self.timeout.value(),
        )

    def save(self) -> bool:
        cfg = self.config()
        try:
            self.store.put(cfg, remember_password=self.remember.isChecked())
        except MatchGenError as exc:
            self.status.setText(f"Not saved: {exc}")
            return False
        if cfg.password and not self.remember.isChecked():
            _SESSION_PASSWORDS[cfg.name] = cfg.password  # for this session only
        self.status.setText(f"Saved {cfg.label()}")
        self._reload(cfg.name)
        return True

    def delete(self) -> None:
        name = self.saved.currentText()
        if name and name != "(new server)" and self.store.remove(name):
            _SESSION_PASSWORDS.pop(name, None)
            self.status.setText(f"Deleted {name}")
            self._reload()

    def test(self) -> None:
        try:
            cfg = self.config().validate()
        except MatchGenError as exc:
            self.status.setText(str(exc))
            return

        def work(progress, cancelled):
            with connect(cfg) as c:
                return c.echo()

        self.status.setText(f"Testing {cfg.label()}...")
        self.test_button.setEnabled(False)
        self.task = Task(work, self)
        self.task.done.connect(lambda msg: self._tested(str(msg)), QUEUED)
        self.task.failed.connect(lambda msg: self._tested(f"Failed: {msg}"), QUEUED)
        self.task.start()

    def _tested(self, message: str) -> None:
        self.test_button.setEnabled(True)
        self.status.setText(message)

    def _show_cache(self) -> None:
        from app.pacs.cache import human_size

        self.cache_label.setText(f"Cache: {self.cache.root} ({human_size(self.cache.size_bytes())})")

    def clear_cache(self) -> None:
        try:
            self.cache.clear()
        except MatchGenError as exc:
            self.status.setText(str(exc))
        self._show_cache()


class PacsBrowser(QDialog):
    """Search a server, pick a study and series, retrieve it in the background; ``series_ready(folder, cfg)``."""

    series_ready = Signal(str, object)

    def __init__(self, parent=None, store: ServerStore | None = None, cache: RetrievalCache | None = None):
        super().__init__(parent)
        self.setWindowTitle("Open from PACS")
        self.resize(1000, 600)
        self.store = store or settings_store()
        self.cache = cache or RetrievalCache()
        self.task: Task | None = None
        self.generation = 0
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        self.server = QComboBox()
        top.addWidget(QLabel("Server:"))
        top.addWidget(self.server, 1)
        manage = QPushButton("Servers...")
        manage.clicked.connect(self.manage_servers)
        top.addWidget(manage)
        lay.addLayout(top)
        grid = QGridLayout()
        self.patient_name = QLineEdit()
        self.patient_id = QLineEdit()
        self.date_from = QLineEdit()
        self.date_to = QLineEdit()
        for w in (self.date_from, self.date_to):
            w.setPlaceholderText("YYYY-MM-DD")
        self.modality = QLineEdit()
        self.accession = QLineEdit()
        fields = [
            ("Patient name", self.patient_name),
            ("Patient ID", self.patient_id),
            ("Study date from", self.date_from),
            ("to", self.date_to),
            ("Modality", self.modality),
            ("Accession", self.accession),
        ]
        for i, (label, w) in enumerate(fields):
            grid.addWidget(QLabel(label), i // 3, 2 * (i % 3))
            grid.addWidget(w, i // 3, 2 * (i % 3) + 1)
            w.returnPressed.connect(self.search)
        lay.addLayout(grid)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        lay.addWidget(self.search_button)
        self.studies = _table(STUDY_COLUMNS)
        self.studies.itemSelectionChanged.connect(self._study_selected)
        self.studies.cellDoubleClicked.connect(self._study_double_clicked)
        lay.addWidget(self.studies, 2)
        self.series = _table(SERIES_COLUMNS)
        self.series.cellDoubleClicked.connect(self._series_double_clicked)
        lay.addWidget(QLabel("Series of the selected study (double-click to open):"))
        lay.addWidget(self.series, 1)
        bottom = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        bottom.addWidget(self.status, 2)
        bottom.addWidget(self.progress, 1)
        bottom.addWidget(self.cancel_button)
        lay.addLayout(bottom)
        self.reload_servers()

    # -- servers ---------------------------------------------------------------------------------------------------
    def reload_servers(self, select: str | None = None) -> None:
        current = select or self.server.currentText()
        self.server.clear()
        self.server.addItems(self.store.names())
        if current:
            self.server.setCurrentText(current)

    def manage_servers(self) -> None:
        d = ServerSettingsDialog(self, self.store, self.cache)
        d.exec()
        self.reload_servers()

    def config(self) -> ServerConfig | None:
        name = self.server.currentText()
        cfg = self.store.get(name) if name else None
        if cfg is None:
            self.status.setText("No server: add one with Servers...")
            return None
        cfg = with_session_password(cfg)
        if cfg.username and not cfg.password:
            pw, ok = QInputDialog.getText(self, "Password", f"Password for {cfg.label()}:", QLineEdit.EchoMode.Password)
            if not ok:
                return None
            _SESSION_PASSWORDS[cfg.name] = pw
            cfg = cfg.with_password(pw)
        return cfg

    # -- background work ---------------------------------------------------------------------------------------------
    def _start(self, what: str, fn, on_done, determinate: bool = False) -> None:
        if self.task is not None and self.task.is_running():
            self.task.cancel()
        self.generation += 1
        gen = self.generation
        self.status.setText(what)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        task = Task(fn, self)
        task.progress.connect(lambda d, t, g=gen: self._progress(g, d, t), QUEUED)
        task.done.connect(lambda r, g=gen: self._finished(g) and on_done(r), QUEUED)
        task.failed.connect(lambda m, g=gen: self._failed(g, m), QUEUED)
        task.cancelled.connect(lambda m, g=gen: self._finished(g) and self.status.setText(m), QUEUED)
        self.task = task
        task.start()

    def _progress(self, gen: int, done: int, total) -> None:
        if gen != self.generation:
            return
        if total:
            self.progress.setRange(0, int(total))
            self.progress.setValue(done)
            self.status.setText(f"Retrieving: {done} of {total} images")

    def _finished(self, gen: int) -> bool:
        if gen != self.generation:
            return False  # a stale result (a newer request replaced it): drop it
        self.progress.setVisible(False)
        self.cancel_button.setEnabled(False)
        return True

    def _failed(self, gen: int, message: str) -> None:
        if not self._finished(gen):
            return
        self.status.setText(message)
        QMessageBox.critical(self, "PACS", message)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.status.setText("Cancelling...")

    def is_busy(self) -> bool:
        return self.task is not None and self.task.is_running()

    # -- search ----------------------------------------------------------------------------------------------------
    def query(self) -> Query:
        return Query(
            patient_name=self.patient_name.text().strip(),
            patient_id=self.patient_id.text().strip(),
            study_date=date_range(self.date_from.text().strip() or None, self.date_to.text().strip() or None) or "",
            modality=self.modality.text().strip(),
            accession=self.accession.text().strip(),
        )

    def search(self) -> None:
        cfg = self.config()
        if cfg is None:
            return
        try:
            q = self.query()
        except MatchGenError as exc:
            self.status.setText(str(exc))
            return

        def work(progress, cancelled):
            with connect(cfg) as c:
                return c.find_studies(q)

        self._start(f"Searching {cfg.label()}...", work, self._show_studies)

    def _show_studies(self, studies: list[StudyInfo]) -> None:
        _fill(self.studies, [s.row() for s in studies], list(studies))
        _fill(self.series, [], [])
        self.status.setText(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}")

    def selected_study(self) -> StudyInfo | None:
        rows = self.studies.selectionModel().selectedRows() if self.studies.selectionModel() else []
        return _row_object(self.studies, rows[0].row()) if rows else None

    def _study_selected(self) -> None:
        st = self.selected_study()
        if st is not None:
            self._list_series(st, open_if_single=False)

    def _list_series(self, st: StudyInfo, open_if_single: bool) -> None:
        cfg = self.config()
        if cfg is None:
            return

        def work(progress, cancelled):
            with connect(cfg) as c:
                return c.find_series(st.study_uid)

        def shown(series: list[SeriesInfo]) -> None:
            _fill(self.series, [s.row() for s in series], list(series))
            images = [s for s in series if s.is_image]
            if open_if_single and len(images) == 1:
                self.retrieve(images[0])
            elif open_if_single and len(images) > 1:
                self.status.setText(f"{len(images)} image series: double-click the one to open")
            elif open_if_single:
                self.status.setText("This study holds no image series")
            else:
                self.status.setText(f"{len(series)} series")

        self._start("Listing series...", work, shown)

    def _study_double_clicked(self, row: int, _col: int) -> None:
        st = _row_object(self.studies, row)
        if st is not None:
            self._list_series(st, open_if_single=True)

    def _series_double_clicked(self, row: int, _col: int) -> None:
        s = _row_object(self.series, row)
        if s is not None:
            self.retrieve(s)

    def retrieve(self, series: SeriesInfo) -> None:
        if not series.is_image:
            msg = f"series {series.number or ''} is a {series.modality} series, not images: pick an image series"
            self.status.setText(msg)
            QMessageBox.critical(self, "Not an image series", msg)
            return
        cfg = self.config()
        if cfg is None:
            return
        from app.pacs.base import retrieve_series

        def work(progress, cancelled):
            with connect(cfg) as c:
                _info, folder = retrieve_series(
                    c, self.cache, series.study_uid, series.series_uid, progress=progress, cancel=cancelled
                )
                return str(folder)

        def ready(folder: str) -> None:
            self.status.setText(f"Retrieved to {folder}")
            self.series_ready.emit(folder, cfg)

        self._start(f"Retrieving series {series.series_uid}...", work, ready, determinate=True)

    def reject(self) -> None:  # closing cancels a retrieval in progress (nothing partial is kept)
        if self.task is not None:
            self.task.cancel()
        super().reject()


# -- the window's menu entries -----------------------------------------------------------------------------------------
def install(window) -> None:
    """File menu entries of the main window (called from ``MainWindow._build_menus``)."""
    act = window.add_action
    act("&File", "Open from &PACS...", lambda: open_from_pacs(window))
    act("&File", "Load &segmentation (DICOM SEG)...", lambda: load_segmentation_dialog(window))
    act("&File", "Save as DICOM SE&G...", lambda: save_seg_dialog(window))
    act("&File", "Send result to PAC&S...", lambda: send_result(window))
    act("&File", "PACS se&rvers and cache...", lambda: ServerSettingsDialog(window).exec())


def open_from_pacs(window) -> PacsBrowser:
    browser = getattr(window, "_pacs_browser", None)
    if browser is None:
        browser = PacsBrowser(window)
        window._pacs_browser = browser

        def ready(folder: str, cfg) -> None:
            window._pacs_origin = cfg
            window.open_path(folder)

        browser.series_ready.connect(ready)
    browser.show()
    browser.raise_()
    return browser


def _dicom_study(window, what: str):
    from app.io.seg import is_dicom_study

    sl = window.state.study
    if sl is None:
        window.show_error(what, "open a study first")
        return None
    if not is_dicom_study(sl.study):
        window.show_error(
            what, f"{Path(sl.study.source).name} is not a DICOM study: DICOM SEG needs a study read from DICOM"
        )
        return None
    return sl


def load_segmentation_dialog(window) -> None:
    if window.state.study is None:
        window.show_error("No study", "open the segmentation's source study first")
        return
    path, _ = QFileDialog.getOpenFileName(window, "Load segmentation", "", "DICOM SEG (*.dcm);;All files (*)")
    if path:
        window.load_mask(path)


def save_seg_dialog(window) -> None:
    if _dicom_study(window, "Save as DICOM SEG") is None:
        return
    path, _ = QFileDialog.getSaveFileName(window, "Save as DICOM SEG", "matchgen_seg.dcm", "DICOM SEG (*.dcm)")
    if path:
        if not path.lower().endswith(".dcm"):
            path += ".dcm"
        window.save_mask(path)


def send_result(window, cfg: ServerConfig | None = None) -> Task | None:
    """Write the current result as a DICOM SEG (running the whole volume first if needed) and send it to ``cfg``
    (default: the server the study came from, else one picked from the saved servers)."""
    if _dicom_study(window, "Send result to PACS") is None:
        return None
    if cfg is None:
        cfg = getattr(window, "_pacs_origin", None)
    store = settings_store()
    if cfg is None:
        names = store.names()
        if not names:
            window.show_error("Send result to PACS", "no PACS server saved: add one in File > PACS servers")
            return None
        name, ok = QInputDialog.getItem(window, "Send result to PACS", "Server:", names, 0, False)
        if not ok:
            return None
        cfg = with_session_password(store.get(name))
    tmp = Path(tempfile.mkdtemp(prefix="matchgen-send-")) / "matchgen_seg.dcm"
    holder: dict = {}

    def send(path: Path) -> None:
        from app.pacs.base import send_files

        def work(progress, cancelled):
            with connect(cfg) as c:
                send_files(c, [path], progress, cancelled)
            return cfg.label()

        task = Task(work, window)
        task.done.connect(lambda label: _sent(window, str(label), tmp), QUEUED)
        task.failed.connect(lambda msg: _send_failed(window, msg, tmp), QUEUED)
        holder["task"] = task
        window._pacs_send_task = task
        task.start()

    def on_saved(path) -> None:
        if Path(path) == tmp:
            window.ctl.events.saved.disconnect(on_saved)
            send(tmp)

    window.ctl.events.saved.connect(on_saved)
    window.statusBar().showMessage(f"Sending the result to {cfg.label()}...")
    if window.save_mask(str(tmp)) and "task" not in holder:
        pass  # written now: on_saved has started the send
    return holder.get("task")


def _cleanup(tmp: Path) -> None:
    import shutil

    shutil.rmtree(tmp.parent, ignore_errors=True)


def _sent(window, label: str, tmp: Path) -> None:
    _cleanup(tmp)
    window.statusBar().showMessage(f"Sent the DICOM SEG to {label}", 10000)
    window._pacs_last_send = ("ok", label)


def _send_failed(window, message: str, tmp: Path) -> None:
    _cleanup(tmp)
    window._pacs_last_send = ("failed", message)
    window.show_error("Send result to PACS", message)


__all__ = [
    "PacsBrowser",
    "ServerSettingsDialog",
    "Task",
    "install",
    "open_from_pacs",
    "send_result",
    "settings_store",
]
