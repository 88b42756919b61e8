"""Figures without a window (matplotlib, Agg): the paper's Figure-2 layout and the viewer's export use the
same code; ``python main.py figure`` calls it directly."""

from app.figure.figure2 import Column, case_columns, figure2, save_figure, write_figure2

__all__ = ["Column", "case_columns", "figure2", "save_figure", "write_figure2"]
