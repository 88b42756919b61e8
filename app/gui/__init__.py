"""The Qt viewer (PySide6 + pyqtgraph + qasync). Only this package imports Qt; it shows and asks, and leaves all
computing to :mod:`app.viewer` (state, slices, results) and :mod:`app.core` (through the Detector)."""
