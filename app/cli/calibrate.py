"""``calibrate``: fill a trained model's eps range and its (eps, tau) chosen on validation into its card."""

from __future__ import annotations

import argparse

HELP = "calibrate a trained model on the validation split: eps range and eps/tau chosen by Dice (into its card)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name in models/ or checkpoint path")
    p.add_argument("--data", required=True, help="dataset folder with an annotated val/ split")
    p.add_argument("--subset", type=int, default=32, help="abnormal validation slices used (default 32)")
    p.add_argument("--max-steps", type=int, default=100, help="solver steps per eps (default 100)")
    p.add_argument(
        "--calibrate-steps", type=int, default=200, help="steps of the unconstrained solve for the eps range (200)"
    )
    p.add_argument("--solver", choices=("fast", "paper"), default="fast", help="as in `bench quality`")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    import torch

    from app.core.device import resolve_device
    from app.errors import OptionError
    from app.nets.zoo import resolve_model
    from app.train.calibrate import CalibrationSettings, calibrate

    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    if min(args.subset, args.max_steps, args.calibrate_steps) < 1:
        raise OptionError("--subset, --max-steps and --calibrate-steps must be >= 1")
    st = CalibrationSettings(
        subset=args.subset, max_steps=args.max_steps, calibrate_max_steps=args.calibrate_steps, solver=args.solver
    )
    card = calibrate(resolve_model(args.model), args.data, st, resolve_device(args.device))
    print(f"chosen on validation: {card['chosen']}")
    return 0
