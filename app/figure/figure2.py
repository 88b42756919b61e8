"""Figure 2 of the paper: the input and its ground truth once, in the first column; then two columns per base
model (base, +MG) with rows pseudo-normal, difference map and detection; each detection's Dice boxed; a legend of
the detection colours (TP red, FP blue, FN green, TN black, :func:`app.core.maps.confusion_rgb`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.maps import CONFUSION_COLOURS, confusion_rgb
from app.core.metrics import dice
from app.errors import OptionError
from app.foreground import FOREGROUND_THRESHOLD
from app.viewer.compute import ModelSession, SliceResult
from app.viewer.slices import StudySlices, to_screen

ROWS = ("Pseudo-normal", "Difference", "Detection")
FORMATS = (".png", ".pdf", ".svg")


@dataclass
class Column:
    title: str  # e.g. "ae-l1" or "ae-l1 +MG"
    result: SliceResult
    tau: float
    dice: float | None
    pred: np.ndarray | None = None  # the detection as detect makes it (the card's component rule applied)


#: the longest title line a 1.7-inch panel holds at 9 pt
TITLE_CHARS = 20


def wrap_title(title: str, width: int = TITLE_CHARS) -> str:
    """``title`` broken into lines of at most ``width`` characters where it can be: before a "+" (an ensemble's
    members, " +MG") or at a space, so that neighbouring columns' titles do not overlap."""
    lines: list[str] = []
    for token in re.findall(r" ?\+?[^+ ]+", title):  # "dae+ae-l1 +MG" -> "dae", "+ae-l1", " +MG"
        if lines and len(lines[-1]) + len(token) <= width:
            lines[-1] += token
        else:
            lines.append(token.lstrip())
    return "\n".join(lines)


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
        p = sess.detection(base.d, t_base)
        cols.append(Column(sess.name, base, t_base, None if gt is None else float(dice(p, gt)), p))
        e = ch["eps"] if eps is None else eps
        mg = sess.solve_slice(k, e)
        t_mg = ch["tau"] if tau is None else tau
        p = sess.detection(mg.d, t_mg)
        cols.append(Column(f"{sess.name} +MG", mg, t_mg, None if gt is None else float(dice(p, gt)), p))
        if progress is not None:
            progress(sess.name)
    return cols


def _crop_box(x: np.ndarray, gt: np.ndarray | None, margin: int = 3) -> tuple[slice, slice]:
    """The slice's foreground (and lesion) bounding box plus a margin: figures show the anatomy, not the air
    (foreground: the app's one threshold, :data:`app.foreground.FOREGROUND_THRESHOLD`)."""
    fg = x > FOREGROUND_THRESHOLD
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


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def figure2(slices: StudySlices, k: int, columns: list[Column], title: str | None = None):
    """The paper's Figure 2 for slice k (a matplotlib Figure on an Agg canvas; no window needed).

    Column 0 holds the input (top, beside the pseudo-normals) and the ground truth (bottom, beside the
    detections) once; then two columns per base model (base, +MG) with rows pseudo-normal, difference map and
    detection (TP red, FP blue, FN green, TN black), each detection's Dice in a green-edged box; a legend of the
    four colours under the figure and one colour bar for all difference maps. Every axes carries a label
    (``input``, ``ground truth``, ``pseudo-normal/j``, ``difference/j``, ``detection/j`` for column j of the
    columns given) so tests and scripts find the panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

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
    w = 1.7
    fig = Figure(figsize=(w * (n + 1.15) + 0.9, (w * ratio + 0.5) * len(ROWS) + 1.0), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    # a narrow gap column between the input/ground-truth column and the model columns
    gs = fig.add_gridspec(len(ROWS), n + 2, width_ratios=[1.0, 0.15, *([1.0] * n)])

    def show(ax, img, cmap=None, lim=None):
        _clean(ax)
        return ax.imshow(
            to_screen(img),
            cmap=cmap,
            vmin=lim[0] if lim else None,
            vmax=lim[1] if lim else None,
            interpolation="nearest",
            aspect=aspect,
        )

    ax = fig.add_subplot(gs[0, 0], label="input")
    show(ax, _grey(x), "gray", (0, 1))
    ax.set_title("Input", fontsize=9)
    ax = fig.add_subplot(gs[len(ROWS) - 1, 0], label="ground truth")
    if gt is not None:
        show(ax, gt.astype(float), "gray", (0, 1))
    else:
        _clean(ax)
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=7, transform=ax.transAxes)
    ax.set_title("Ground truth", fontsize=9)

    diff_im = None
    for j, col in enumerate(columns):
        r = col.result
        pred = (r.mask(col.tau) if col.pred is None else col.pred)[box]
        det = confusion_rgb(pred, gt) if gt is not None else np.where(pred[..., None], 255, 0).astype(np.uint8)
        axes = [fig.add_subplot(gs[i, j + 2], label=f"{name.lower()}/{j}") for i, name in enumerate(ROWS)]
        show(axes[0], _grey(r.s[box]), "gray", (0, 1))
        diff_im, diff_ax = show(axes[1], r.d[box], "inferno", (0, dmax)), axes[1]
        show(axes[2], det)
        axes[0].set_title(wrap_title(col.title), fontsize=9)
        label = f"Dice {col.dice:.3f}" if col.dice is not None else "Dice n/a"
        axes[2].text(
            0.04,
            0.04,
            label,
            transform=axes[2].transAxes,
            ha="left",
            va="bottom",
            fontsize=7,
            color="black",
            gid="dice",
            bbox={"boxstyle": "square,pad=0.3", "facecolor": "white", "edgecolor": "#00a000", "linewidth": 1.2},
        )
        axes[2].set_xlabel(f"\u03c4={col.tau:.3g}, \u03b5={col.result.eps:.3g}", fontsize=7)
        if j == 0:
            for ax, name in zip(axes, ROWS, strict=True):
                ax.set_ylabel(name, fontsize=9)
    if diff_im is not None:
        fig.colorbar(diff_im, ax=diff_ax, label="D", fraction=0.08, pad=0.03)
    handles = [
        Patch(facecolor=np.asarray(CONFUSION_COLOURS[key]) / 255.0, edgecolor="0.5", label=name)
        for key, name in (("tp", "TP"), ("fp", "FP"), ("fn", "FN"), ("tn", "TN"))
    ]
    if gt is not None:
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle(title or f"{slices.name}, axial slice {k}", fontsize=10)
    return fig


def write_figure2(
    slices: StudySlices,
    k: int,
    models: list[str | None],
    path: str | os.PathLike,
    device: str = "auto",
    eps: float | None = None,
    tau: float | None = None,
) -> tuple[Path, list[Column]]:
    """Figure 2 of slice k for ``models`` (zoo names or checkpoint paths; each with its card's eps/tau unless
    given), written to ``path``: what ``python main.py figure`` and the viewer's export do."""
    sessions = [ModelSession.load(n, slices, device) for n in models or [None]]
    cols = case_columns(sessions, k, eps=eps, tau=tau)
    fig = figure2(sessions[0].slices, k, cols)
    return save_figure(fig, path), cols


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
