"""The Figure-2 layout of the paper: rows pseudo-normal, input, difference, detection, ground truth; one column
per (model, base or +MG); Dice under each detection. Detection is coloured TP red, FP blue, FN green, TN black
(:func:`app.core.maps.confusion_rgb`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.maps import confusion_rgb
from app.errors import OptionError
from app.viewer.compute import ModelSession, SliceResult
from app.viewer.slices import StudySlices, to_screen

ROWS = ("Pseudo-normal", "Input", "Difference", "Detection", "Ground truth")
FORMATS = (".png", ".pdf", ".svg")


@dataclass
class Column:
    title: str  # e.g. "ae-l1" or "ae-l1 +MG"
    result: SliceResult
    tau: float
    dice: float | None


def case_columns(
    sessions: list[ModelSession], k: int, eps: float | None = None, tau: float | None = None, progress=None
) -> list[Column]:
    """Base and +MG columns for each model on slice k, with each model's eps/tau from its card unless given."""
    cols: list[Column] = []
    for sess in sessions:
        ch = sess.choices
        gt = sess.slices.gt_slice(k)
        base = sess.solve_slice(k, 0.0)
        t_base = ch["tau_base"] if tau is None else tau
        cols.append(Column(sess.name, base, t_base, base.dice(t_base, gt)))
        e = ch["eps"] if eps is None else eps
        mg = sess.solve_slice(k, e)
        t_mg = ch["tau"] if tau is None else tau
        cols.append(Column(f"{sess.name} +MG", mg, t_mg, mg.dice(t_mg, gt)))
        if progress is not None:
            progress(sess.name)
    return cols


def _crop_box(x: np.ndarray, gt: np.ndarray | None, margin: int = 3) -> tuple[slice, slice]:
    """The slice's foreground (and lesion) bounding box plus a margin: figures show the anatomy, not the air."""
    fg = x > 0.01
    if gt is not None:
        fg = fg | gt
    if not fg.any():
        return (slice(None), slice(None))
    xs, ys = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    return (
        slice(max(xs[0] - margin, 0), xs[-1] + 1 + margin),
        slice(max(ys[0] - margin, 0), ys[-1] + 1 + margin),
    )


def _grey(a: np.ndarray) -> np.ndarray:
    return np.clip(a, 0.0, 1.0)


def figure2(slices: StudySlices, k: int, columns: list[Column], title: str | None = None):
    """A matplotlib Figure (Agg canvas; no window needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not columns:
        raise OptionError("a figure needs at least one model")
    gt = slices.gt_slice(k)
    x = slices.normalized()[:, :, k]
    n = len(columns)
    sp = getattr(slices.study, "spacing", (1.0, 1.0, 1.0))
    aspect = float(sp[1]) / float(sp[0]) if sp[0] else 1.0  # screen rows are Y, columns X: keep mm shape
    dmax = max(float(np.max(c.result.d)) for c in columns) or 1.0
    box = _crop_box(x, gt)
    x = x[box]
    gt = gt[box] if gt is not None else None
    ratio = x.shape[1] * aspect / x.shape[0]  # panel height / width on screen
    w = 1.9
    fig = Figure(figsize=(w * n + 1.0, (w * ratio + 0.45) * len(ROWS) + 0.5), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(ROWS), n, squeeze=False)
    diff_im = None
    for j, col in enumerate(columns):
        r = col.result
        pred = r.mask(col.tau)[box]
        det = confusion_rgb(pred, gt) if gt is not None else np.where(pred[..., None], 255, 0).astype(np.uint8)
        panels = [
            (_grey(r.s[box]), "gray", (0, 1)),
            (_grey(x), "gray", (0, 1)),
            (r.d[box], "inferno", (0, dmax)),
            (det, None, None),
            (gt.astype(float) if gt is not None else None, "gray", (0, 1)),
        ]
        for i, (img, cmap, lim) in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if img is None:
                ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                continue
            im = ax.imshow(
                to_screen(img),
                cmap=cmap,
                vmin=lim[0] if lim else None,
                vmax=lim[1] if lim else None,
                interpolation="nearest",
                aspect=aspect,
            )
            if i == 2:
                diff_im = im
        axes[0, j].set_title(col.title, fontsize=9)
        label = f"Dice {col.dice:.3f}" if col.dice is not None else "Dice n/a (no ground truth)"
        axes[3, j].set_xlabel(f"{label}\n\u03c4={col.tau:.3g}, \u03b5={col.result.eps:.3g}", fontsize=7)
    for i, name in enumerate(ROWS):
        axes[i, 0].set_ylabel(name, fontsize=9)
    if diff_im is not None:
        cax = axes[2, -1].inset_axes([1.04, 0.0, 0.06, 1.0])
        fig.colorbar(diff_im, cax=cax, label="D")
    fig.suptitle(title or f"{slices.name}, axial slice {k}", fontsize=10)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """PNG, PDF or SVG by suffix; written to a temporary file beside the target, then renamed."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise OptionError(f"{p.name}: figure format must be one of {', '.join(FORMATS)}")
    import matplotlib

    from app.figure.output import atomic_output

    with atomic_output(p) as tmp, matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        # text stays text in vector files (editable, searchable)
        fig.savefig(tmp, format=suffix[1:], bbox_inches="tight")
    return p
