"""The findings dock: the current study's connected findings, most suspicious first (peak D, volume in ml, extent
in mm, mean D, slice range). A click on a row asks the window to jump to the finding's centre slice and outline it.
Only display: the list, its order and the selection are :class:`app.viewer.findings.FindingsList`'s."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from app.gui.worklist_dock import filling, row_table
from app.viewer.findings import FindingsList

HEADERS = ("#", "peak D", "volume (ml)", "extent (mm)", "mean D", "slices")


class FindingsPanel(QWidget):
    #: index of the finding the user chose (into FindingsList.findings)
    finding_chosen = Signal(int)

    #: the title for the dock around this panel
    title_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.findings: FindingsList | None = None
        self.table = row_table(QTableWidget(0, len(HEADERS)), HEADERS)
        self.table.cellClicked.connect(lambda row, _c: self.finding_chosen.emit(row))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)

    def set_findings(self, fl: FindingsList | None) -> None:
        self.findings = fl
        rows = fl.rows() if fl is not None else []
        with filling(self.table):
            self.table.setRowCount(len(rows))
            for i, row in enumerate(rows):
                for j, v in enumerate(row):
                    item = QTableWidgetItem(v)
                    if j != 3:
                        item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    self.table.setItem(i, j, item)
        n = len(rows)
        src = f", from the {fl.source}" if fl is not None and fl.source else ""
        self._title(f"Findings ({n}{src})" if fl is not None else "Findings (run the whole volume)")

    def _title(self, text: str) -> None:
        self.title = text
        self.title_changed.emit(text)
