"""``view``: the desktop viewer (also what ``python main.py`` with no subcommand runs)."""

from __future__ import annotations

import argparse

HELP = "open the viewer (default: the bundled demo study and the default model)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", nargs="?", default=None, help="NIfTI file, DICOM folder or file, PNG/JPEG picture")
    p.add_argument("--mask", default=None, help="ground-truth mask on the study's grid (NIfTI or PNG)")
    p.add_argument("--model", default=None, help="model name in models/ or a checkpoint path (default model)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument(
        "--screenshot",
        default=None,
        metavar="PNG",
        help="render the window after the first result, save it as PNG and exit 0 (headless checks, docs)",
    )


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from app.errors import OptionError

    headless = sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")
    )
    if headless:
        if not args.screenshot:
            raise OptionError(
                "no display (DISPLAY/WAYLAND_DISPLAY unset): run it on a desktop, or render headless with "
                "--screenshot PNG (or QT_QPA_PLATFORM=offscreen)"
            )
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from app.cli.qtcheck import check_desktop

    check_desktop()  # Qt's xcb plugin aborts the process when its system libraries are missing: say so first
    from app.gui.app import run_viewer

    return run_viewer(args.study, args.mask, args.model, args.screenshot, args.device)
