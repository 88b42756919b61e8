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
    p.add_argument(
        "--no-postprocess", action="store_true",
        help="keep the maps as they are instead of choosing median filter, erosion and minimum component size",
    )  # fmt: skip
    p.add_argument(
        "--extend", type=int, default=2,
        help="times the eps grid may grow while +MG's best eps is its top (default 2, 0 = never)",
    )  # fmt: skip
    p.add_argument("--no-volumes", action="store_true", help="skip the whole-volume choice on the validation volumes")
    p.add_argument(
        "--loss-cap", type=float, default=None, metavar="C",
        help="solve the capped objective mean(min(|x - g(z)|, C)) instead of the plain L1: pixels further than C "
        "from the pseudo-normal stop pulling the search (default: the plain L1); recorded in the card",
    )  # fmt: skip
    p.add_argument(
        "--post-on", choices=("volumes", "slices"), default="volumes",
        help="choose the post-processing by the base model's whole-volume Dice on the validation volumes (default; "
        "slices when the data set has no volumes) or by its per-image Dice on abnormal validation slices",
    )  # fmt: skip
    p.add_argument(
        "--z-grid", default=None, metavar="MM,MM,...",
        help="z windows in mm tried after the whole-volume choice: D averaged over the axial slices of a window that "
        "wide, chosen by +MG volume Dice at the chosen eps (default: app.core.protocol.Z_GRID_MM, 0,6,10,14,18; "
        "0 alone keeps D per slice)",
    )  # fmt: skip
    p.add_argument(
        "--z-only", action="store_true",
        help="only the z-window stage, on a card whose whole-volume choice exists (its eps held fixed)",
    )  # fmt: skip
    p.add_argument(
        "--eps-area-only", action="store_true",
        help="only record that eps scales with each slice's foreground area (sqrt of its area over the median of the "
        "validation volumes' slices), eps and tau unchanged: the same budget per brain pixel on small sections",
    )  # fmt: skip
    p.add_argument(
        "--layout", choices=("auto", "channels_last", "contiguous"), default="auto",
        help="memory layout of the fast solver, recorded in the card for detect and the viewer: auto (default: "
        "the faster of the two, timed on a validation batch), channels_last or contiguous",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import torch

    from app.core.device import resolve_device
    from app.core.protocol import Z_GRID_MM
    from app.errors import OptionError
    from app.nets.zoo import resolve_model
    from app.train.calibrate import CalibrationSettings, calibrate

    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    if min(args.subset, args.max_steps, args.calibrate_steps) < 1:
        raise OptionError("--subset, --max-steps and --calibrate-steps must be >= 1")
    if args.extend < 0:
        raise OptionError("--extend must be >= 0")
    try:
        z_grid = Z_GRID_MM if args.z_grid is None else tuple(float(v) for v in args.z_grid.split(",") if v.strip())
    except ValueError:
        raise OptionError(f"--z-grid must be numbers of mm separated by commas, not {args.z_grid!r}") from None
    if not z_grid or any(not (v >= 0 and v < 1e4) for v in z_grid):
        raise OptionError(f"--z-grid must be numbers of mm >= 0, not {args.z_grid!r}")
    if args.eps_area_only:
        from app.train.calibrate import calibrate_eps_area

        card = calibrate_eps_area(resolve_model(args.model), args.data)
        print(f"eps scaling: {card['eps_scaling']}")
        return 0
    if args.z_only:
        from app.train.calibrate import calibrate_z

        card = calibrate_z(resolve_model(args.model), args.data, z_grid, resolve_device(args.device))
        print(f"chosen on validation volumes (what detect and the viewer apply): {card['chosen_volume']}")
        return 0
    st = CalibrationSettings(
        subset=args.subset,
        max_steps=args.max_steps,
        calibrate_max_steps=args.calibrate_steps,
        solver=args.solver,
        postprocess=not args.no_postprocess,
        extend=args.extend,
        volumes=not args.no_volumes,
        post_on=args.post_on,
        loss_cap=args.loss_cap,
        layout=args.layout,
        z_grid_mm=z_grid,
    )
    card = calibrate(resolve_model(args.model), args.data, st, resolve_device(args.device))
    print(f"chosen on validation: {card['chosen']}")
    if "chosen_volume" in card:
        print(f"chosen on validation volumes (what detect and the viewer apply): {card['chosen_volume']}")
    return 0
