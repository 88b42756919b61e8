"""``figure``: a Figure-2-style case figure of one slice, without a window."""

from __future__ import annotations

import argparse

HELP = "the paper's Figure 2 for one slice: input and ground truth, then base and +MG columns per model"
DESCRIPTION = (
    "Column 1: the input and its ground truth. Then two columns per model (base, +MG) with rows pseudo-normal, "
    "difference map and detection (TP red, FP blue, FN green, TN black), each detection's Dice boxed, and a "
    "legend of the detection colours. PNG, PDF or SVG by the --out suffix."
)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="NIfTI file, DICOM folder or file, or a PNG/JPEG picture")
    p.add_argument("--mask", default=None, help="ground-truth mask on the study's grid (NIfTI or PNG)")
    p.add_argument("--slice", type=int, default=None, help="axial slice (default: largest lesion, else middle)")
    p.add_argument("--models", default=None, help="comma-separated model names or checkpoint paths (default model)")
    p.add_argument("--out", required=True, help="output figure (.png, .pdf or .svg)")
    p.add_argument("--eps", type=float, default=None, help="eps for +MG (default: each model's card)")
    p.add_argument("--tau", type=float, default=None, help="threshold (default: each model's card)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")


def run(args: argparse.Namespace) -> int:
    from app.errors import OptionError
    from app.figure import write_figure2
    from app.figure.figure2 import FORMATS
    from app.viewer.loading import open_study

    if not args.out.lower().endswith(FORMATS):
        raise OptionError(f"--out must end in one of {', '.join(FORMATS)}")
    slices = open_study(args.study, args.mask)
    k = args.slice
    if k is None:
        k = slices.initial_slice
    if not 0 <= k < slices.n_slices:
        raise OptionError(f"--slice {k} is outside the study (0..{slices.n_slices - 1})")
    names = [n.strip() for n in (args.models or "").split(",") if n.strip()] or [None]
    out, cols = write_figure2(slices, k, names, args.out, args.device, eps=args.eps, tau=args.tau)
    for c in cols:
        dice = "n/a" if c.dice is None else f"{c.dice:.3f}"
        print(f"{c.title:<24} eps={c.result.eps:.3g} tau={c.tau:.3g} dice={dice} steps={c.result.steps}")
    print(f"wrote {out}")
    return 0
