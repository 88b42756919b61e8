"""The worklist dock: a batch output folder's studies ranked by their study-level score (failures last, greyed,
with their error as tooltip). Double-click (or Enter) on a study asks the window to open it with its saved
results; :meth:`WorklistPanel.step` moves to the next/previous study; a click on a column header orders the list by
that column (again: the other way). The table is a view of the list (:class:`WorklistModel`): only the rows on
screen are drawn, so a list of thousands of studies shows and sorts without building a widget item per cell.
While a folder is read the title counts the results read, and a batch that has not finished says so in an amber
note with a Reload button. Only display: the ranking, the order and the cursor are
:class:`app.viewer.worklist.Worklist`'s."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.findings import SCORE_LABEL
from app.viewer.worklist import Worklist, WorklistEntry

HEADERS = ("rank", "study", SCORE_LABEL, "q99.9 D", "findings", "flagged (ml)", "peak slice", "status")
#: the worklist's sort key of each column (app.viewer.worklist.SORT_KEYS)
COLUMN_KEYS = ("rank", "study", "score", "d_q999", "findings", "flagged_ml", "peak_slice", "status")


#: the columns whose numbers are right-aligned
NUMERIC_COLUMNS = frozenset({0, 2, 3, 4, 5, 6})
FAILED_GREY = QColor(150, 150, 150)


def cells(e: WorklistEntry) -> tuple[str, ...]:
    """The texts of one study's row, in :data:`HEADERS` order."""
    return (
        "" if e.rank is None else str(e.rank),
        e.id,
        "" if e.score is None else f"{e.score:.3f}",
        "" if e.d_q999 is None else f"{e.d_q999:.3f}",
        "" if e.n_findings is None else str(e.n_findings),
        "" if e.flagged_ml is None else f"{e.flagged_ml:.2f}",
        "" if e.peak_slice is None else str(e.peak_slice),
        e.status_text,
    )


class WorklistModel(QAbstractTableModel):
    """The worklist's entries, in their current order, as a read-only table: a failure greyed with its error as
    tooltip, a study with its source. :meth:`reset` after the list or its order changed. The texts are made once
    per reset: the view asks for each cell many times (painting, sizing the columns), and in Python every ask costs."""

    _DISPLAY = Qt.ItemDataRole.DisplayRole
    _ALIGN = Qt.ItemDataRole.TextAlignmentRole
    _FOREGROUND = Qt.ItemDataRole.ForegroundRole
    _TOOLTIP = Qt.ItemDataRole.ToolTipRole
    _RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[WorklistEntry] = []
        #: the rows' texts, in :data:`HEADERS` order
        self.texts: list[tuple[str, ...]] = []

    def reset(self, entries: list[WorklistEntry]) -> None:
        self.beginResetModel()
        self.entries = list(entries)
        self.texts = [cells(e) for e in self.entries]
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008 - Qt naming and signature
        return 0 if parent.isValid() else len(self.entries)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == self._DISPLAY:
            return HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if role == self._DISPLAY:
            return self.texts[index.row()][index.column()]
        if role == self._ALIGN:
            return self._RIGHT if index.column() in NUMERIC_COLUMNS else None
        if role == self._FOREGROUND:
            return None if self.entries[index.row()].ok else FAILED_GREY
        if role == self._TOOLTIP:
            e = self.entries[index.row()]
            return e.source if e.ok else e.error
        return None


def fit_columns(table: QTableView, texts: list[tuple[str, ...]]) -> None:
    """Size each column of ``table`` (a view of ``texts``, one tuple of cell texts per row) to its widest cell and its
    header, as ``resizeColumnsToContents`` would but at the cost of one text measure per distinct text: Qt's
    measures the first thousand rows through the model's ``data`` at eight roles per cell (0.4 s for a worklist of
    2,000 studies here); the delegate measures only the widest cell of each column, which brings its margins."""
    model, header = table.model(), table.horizontalHeader()
    fm, grid = table.fontMetrics(), int(table.showGrid())
    for c in range(model.columnCount()):
        width = 0
        if texts:
            widest = max({row[c] for row in texts}, key=fm.horizontalAdvance)
            r = next(i for i, row in enumerate(texts) if row[c] == widest)
            width = table.sizeHintForIndex(model.index(r, c)).width() + grid
        header.resizeSection(c, max(width, header.sectionSizeHint(c)))


class _Table(QTableView):
    """Enter opens the current row (not ``activated``: on single-click desktops that fires on a plain click)."""

    enter_pressed = Signal()

    def keyPressEvent(self, ev):  # noqa: N802 - Qt naming
        if ev.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.enter_pressed.emit()
            ev.accept()
            return
        super().keyPressEvent(ev)


def row_table(table, headers=None):
    """``table`` (a QTableWidget with its ``headers``, or a QTableView whose model names them) set up as the docks'
    read-only list: whole rows selected one at a time, no editing, no row numbers; columns sized to their contents
    by :func:`filling` after each fill (a header in ``ResizeToContents`` mode measures every row again at each
    ``setItem`` of a visible table: filling 2,000 studies then took minutes)."""
    if headers is not None:
        table.setHorizontalHeaderLabels(headers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    return table


@contextmanager
def filling(table):
    """Fill ``table`` inside this block: no repaint meanwhile, then the columns sized to their contents once."""
    table.setUpdatesEnabled(False)
    try:
        yield table
    finally:
        table.resizeColumnsToContents()
        table.setUpdatesEnabled(True)


class WorklistPanel(QWidget):
    #: a study the user wants to open (a WorklistEntry)
    open_requested = Signal(object)

    #: the title for the dock around this panel
    title_changed = Signal(str)

    #: the user asks to read the worklist's folder again
    reload_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.worklist: Worklist | None = None
        self.model = WorklistModel(self)
        self.table = _Table()
        self.table.setModel(self.model)
        row_table(self.table)
        self.table.doubleClicked.connect(lambda index: self.open_row(index.row()))
        self.table.enter_pressed.connect(lambda: self.open_row(self.table.currentIndex().row()))
        header = self.table.horizontalHeader()
        header.setSectionsClickable(True)
        header.setSortIndicatorShown(True)
        header.sectionClicked.connect(self.sort_by_column)
        # how well the order triages (the batch's record of the card's measurement), above the order it qualifies
        self.triage = QLabel()
        self.triage.setObjectName("triage-evidence")
        self.triage.setWordWrap(True)
        self.triage.setVisible(False)
        # a batch that has not finished (or was stopped): its order may still change
        self.unfinished = QLabel()
        self.unfinished.setObjectName("worklist-unfinished")
        self.unfinished.setWordWrap(True)
        self.unfinished.setStyleSheet(
            "QLabel#worklist-unfinished { background: #fff3cd; color: #5c4400; padding: 4px; }"
        )
        self.reload = QPushButton("Reload")
        self.reload.setToolTip("Read the folder again: the studies the batch has finished since (F5)")
        self.reload.clicked.connect(self.reload_requested)
        self.note_row = QWidget()
        row = QHBoxLayout(self.note_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.unfinished, 1)
        row.addWidget(self.reload)
        self.note_row.setVisible(False)
        self._base_title = "Worklist"
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.note_row)
        lay.addWidget(self.triage)
        lay.addWidget(self.table)

    def set_worklist(self, wl: Worklist) -> None:
        self.worklist = wl
        self._show_triage(wl.triage)
        self.unfinished.setText(wl.unfinished or "")
        self.unfinished.setVisible(bool(wl.unfinished))
        self.note_row.setVisible(bool(wl.unfinished))
        self._fill()
        so_far = " so far" if wl.unfinished else ""
        self._base_title = f"Worklist - {wl.folder.name} ({sum(e.ok for e in wl.entries)} studies{so_far})"
        self._title(self._base_title)

    def set_reading(self, what: tuple | None) -> None:
        """``(folder, done, total)`` while a folder is read (the title counts the results read; the list shown
        stays usable), None when the read ended (the title of the list shown again)."""
        if what is None:
            self._title(self._base_title)
            return
        folder, done, total = what
        name = Path(folder).name
        count = f": {done:,} of {total:,} results" if total else ""
        self._title(f"Worklist - reading {name}{count}...")

    def sort_by_column(self, column: int) -> None:
        """Order the list by ``column`` (a header click); the current study stays selected."""
        wl = self.worklist
        if wl is None or not 0 <= column < len(COLUMN_KEYS):
            return
        wl.sort_by(COLUMN_KEYS[column])
        self._fill()
        if wl.current is not None:
            self.table.selectRow(wl.current)

    def _fill(self) -> None:
        wl = self.worklist
        self.table.setUpdatesEnabled(False)
        try:
            self.model.reset(wl.entries)
            fit_columns(self.table, self.model.texts)
        finally:
            self.table.setUpdatesEnabled(True)
        order = Qt.SortOrder.DescendingOrder if wl.descending else Qt.SortOrder.AscendingOrder
        self.table.horizontalHeader().setSortIndicator(COLUMN_KEYS.index(wl.sort_key), order)

    def open_row(self, row: int) -> WorklistEntry | None:
        if self.worklist is None or not 0 <= row < len(self.worklist.entries):  # row -1: no current row
            return None
        e = self.worklist.select(row)
        self.table.selectRow(row)
        if not e.ok:
            return None
        self.open_requested.emit(e)
        return e

    def step(self, delta: int) -> WorklistEntry | None:
        """Open the next (+1) or previous (-1) study of the worklist."""
        if self.worklist is None:
            return None
        e = self.worklist.step(delta)
        if e is None:
            return None
        self.table.selectRow(self.worklist.current)
        self.open_requested.emit(e)
        return e

    def _show_triage(self, ev: dict) -> None:
        """The evidence's sentence; amber unless the order was measured to triage."""
        validated = ev.get("status") == "validated"
        bg, fg = ("#e6f2e6", "#1d4d1d") if validated else ("#fff3cd", "#5c4400")
        self.triage.setStyleSheet(f"QLabel#triage-evidence {{ background: {bg}; color: {fg}; padding: 4px; }}")
        self.triage.setText(str(ev.get("text", "")))
        self.triage.setToolTip(_measurement_tip(ev.get("measurement")))
        self.triage.setVisible(bool(ev.get("text")))

    def _title(self, text: str) -> None:
        self.title = text
        self.title_changed.emit(text)


def _measurement_tip(m: dict | None) -> str:
    if not isinstance(m, dict):
        return ""
    keys = ("split", "mode", "eps", "tau", "seed", "measured", "command")
    return "\n".join(f"{k}: {m[k]}" for k in keys if m.get(k) not in (None, ""))
