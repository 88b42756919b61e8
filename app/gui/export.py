"""Exporting a widget as it is on screen: PNG (pixels), SVG (QSvgGenerator) or PDF (QPdfWriter, A4 landscape),
written atomically (temporary file beside the target, then renamed)."""

from __future__ import annotations

from pathlib import Path

from app.errors import OptionError

FORMATS = (".png", ".svg", ".pdf")


def export_widget(widget, path, title: str = "MatchGen Viewer") -> Path:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise OptionError(f"{p.name}: export as .png, .svg or .pdf")
    from app.figure.output import atomic_output

    with atomic_output(p) as tmp:
        if suffix == ".png":
            if not widget.grab().save(tmp, "PNG"):
                raise OptionError(f"cannot write {p}")
        else:
            _render_vector(widget, tmp, suffix, title)
    return p


def _render_vector(widget, path: str, suffix: str, title: str) -> None:
    """The widget drawn as vectors (images embedded)."""
    from PySide6.QtGui import QPageLayout, QPageSize, QPainter, QPdfWriter
    from PySide6.QtSvg import QSvgGenerator

    src = widget.rect()
    if suffix == ".svg":
        dev = QSvgGenerator()
        dev.setFileName(path)
        dev.setSize(src.size())
        dev.setViewBox(src)
        dev.setTitle(title)
    else:
        dev = QPdfWriter(path)
        dev.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
        dev.setPageOrientation(QPageLayout.Orientation.Landscape)
    painter = QPainter(dev)
    try:
        if suffix == ".pdf":
            target = painter.viewport()
            scale = min(target.width() / src.width(), target.height() / src.height())
            painter.scale(scale, scale)
        widget.render(painter)
    finally:
        painter.end()
