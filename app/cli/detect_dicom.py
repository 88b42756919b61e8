"""The DICOM and PACS side of ``detect`` (kept apart from the detection itself):

- ``detect STUDY --out SEG.dcm`` (a DICOM study): the mask as a DICOM Segmentation; ``--seg SEG.dcm`` writes it
  beside a NIfTI ``--out``; ``--maps DIR`` on a DICOM study adds ``DIR/difference_map.dcm`` (Parametric Map).
- ``detect --server NAME|URL --study-uid UID [--series-uid UID] [--send] [--out SEG.dcm]``: retrieve the series
  into the cache, detect, and with ``--send`` send the SEG back to the same server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(p: argparse.ArgumentParser) -> None:
    from app.cli.pacs import add_cache_option, add_server_options

    p.add_argument("--seg", metavar="SEG.dcm", default=None, help="also write a DICOM SEG (DICOM studies)")
    g = p.add_argument_group("PACS (instead of STUDY)")
    g.add_argument("--study-uid", default=None, help="with --server: the study to retrieve")
    g.add_argument("--series-uid", default=None, help="with --server: the series (default: the only image series)")
    g.add_argument("--send", action="store_true", help="with --server: send the DICOM SEG back to the server")
    add_server_options(p, required=False)
    add_cache_option(p)


def is_dcm(path) -> bool:
    return path is not None and Path(path).name.lower().endswith(".dcm")


def check(args: argparse.Namespace) -> None:
    """Option combinations, before any work (one readable line each)."""
    from app.errors import OptionError

    server = getattr(args, "server", None)
    if server and args.study:
        raise OptionError("give either STUDY or --server with --study-uid, not both")
    if not server and not args.study:
        raise OptionError("give a STUDY (file or folder), or --server with --study-uid")
    if server and not args.study_uid:
        raise OptionError("--server needs --study-uid (find it with: python main.py pacs find --server ...)")
    if not server and (args.study_uid or args.series_uid or args.send):
        raise OptionError("--study-uid, --series-uid and --send need --server")
    if not args.out and not args.send:
        raise OptionError("--out is required (or --send, to send the SEG to the server)")
    if args.seg is not None and not is_dcm(args.seg):
        raise OptionError(f"--seg {args.seg}: a DICOM SEG is written to a .dcm file")
    if args.seg is not None and is_dcm(args.out):
        raise OptionError("--seg is for a DICOM SEG beside a NIfTI --out; --out already names a .dcm")
    for opt, value in (("--out", args.out), ("--seg", args.seg)):
        if value is None:
            continue
        p = Path(value)
        if not p.name.lower().endswith((".nii", ".nii.gz", ".dcm")) and not (opt == "--out" and p.suffix == ".nrrd"):
            raise OptionError(f"{opt} {p}: write the mask as .nii/.nii.gz (NIfTI), .nrrd or .dcm (DICOM SEG)")
        if not p.parent.is_dir():
            raise OptionError(f"{opt} {p}: folder {p.parent} does not exist")


def input_path(args: argparse.Namespace) -> str:
    """The study to read: STUDY, or the series retrieved from --server into the cache."""
    if not getattr(args, "server", None):
        return args.study
    from app.cli.pacs import ProgressLine, cache_from_args, server_from_args
    from app.pacs import connect
    from app.pacs.base import retrieve_series

    cfg = server_from_args(args)
    bar = ProgressLine("retrieving")
    with connect(cfg) as c:
        try:
            info, folder = retrieve_series(c, cache_from_args(args), args.study_uid, args.series_uid, progress=bar)
        finally:
            bar.end()
    print(
        f"retrieved series {info.series_uid} ({info.modality} '{info.description}') from {cfg.label()} to {folder}",
        file=sys.stderr,
    )
    args._pacs_config = cfg
    return str(folder)


def require_dicom_input(args: argparse.Namespace, study) -> None:
    """Before the (long) detection: DICOM output needs a DICOM study."""
    if is_dcm(args.out) or args.seg is not None or args.send:
        from app.io.seg import require_dicom

        require_dicom(study, "DICOM SEG output")


def algorithm(stem: Path, family: str, eps: float, tau: float, base_only: bool):
    from app.io.seg import AlgorithmInfo

    return AlgorithmInfo.for_checkpoint(stem, family, eps, tau, base_only)


def write_outputs(args: argparse.Namespace, study, mask, d_vol, algo) -> Path | None:
    """Write the DICOM outputs that were asked for (SEG, Parametric Map) and send the SEG; returns the SEG path."""
    from app.io.seg import is_dicom_study, write_parametric_map, write_seg

    seg_path = Path(args.out) if is_dcm(args.out) else Path(args.seg) if args.seg else None
    tmp_dir = None
    if seg_path is None and args.send:
        import tempfile

        tmp_dir = tempfile.TemporaryDirectory(prefix="matchgen-seg-")
        seg_path = Path(tmp_dir.name) / "seg.dcm"
    try:
        if seg_path is not None:
            write_seg(study, mask, seg_path, algo)
            if seg_path.parent != Path(getattr(tmp_dir, "name", "")):
                print(f"wrote DICOM SEG {seg_path}")
        if args.maps and is_dicom_study(study):
            pm = write_parametric_map(study, d_vol, Path(args.maps) / "difference_map.dcm", algo)
            print(f"wrote DICOM Parametric Map {pm}")
        if args.send:
            from app.cli.pacs import ProgressLine
            from app.pacs import connect
            from app.pacs.base import send_files

            cfg = args._pacs_config
            bar = ProgressLine("sending")
            with connect(cfg) as c:
                try:
                    send_files(c, [seg_path], bar)
                finally:
                    bar.end()
            print(f"sent the DICOM SEG to {cfg.label()}")
    finally:
        if tmp_dir is not None:
            tmp_dir.cleanup()
    return seg_path
