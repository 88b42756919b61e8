"""``train``: train a base model on a slice dataset (``DIR/train``, ``DIR/val``) and write a checkpoint."""

from __future__ import annotations

import argparse
import shlex
import sys

HELP = "train a base model (any registered family) on a slice dataset and write models/NAME"
DESCRIPTION = (
    "Train a base model on DIR/train (normal slices) with a validation loss per epoch on DIR/val, writing "
    "OUT.safetensors + OUT.json after every epoch and the optimizer state to OUT.train.safetensors "
    "(--resume continues from it). Seeded; CPU or GPU."
)


#: epochs when neither --epochs nor --time-limit is given
DEFAULT_EPOCHS = 10
#: the epoch bound when only --time-limit is given: the time limit stops training long before it
UNTIL_TIME_LIMIT = 1_000_000


def resolve_epochs(epochs: int | None, time_limit: float | None) -> int:
    """--epochs if given; else until the time limit if one is given; else :data:`DEFAULT_EPOCHS`."""
    if epochs is not None:
        return epochs
    return UNTIL_TIME_LIMIT if time_limit is not None else DEFAULT_EPOCHS


def _kv(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    for conv in (int, float):
        try:
            return k, conv(v)
        except ValueError:
            pass
    return k, v


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "family", help="model family: ae-l1, ce-ae, vae, vae-grad, dae, ganomaly, ddgan, or a plug-in's family"
    )
    p.add_argument("--data", required=True, help="dataset folder with train/ and val/ (e.g. from `data brain-proxy`)")
    p.add_argument("--out", required=True, help="checkpoint to write, e.g. models/NAME")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs (default {DEFAULT_EPOCHS}; with --time-limit and no --epochs: until the time limit)",
    )
    p.add_argument("--size", type=int, default=None, help="image size (default: the data's slice size)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the family's, 1e-3 or 2e-4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    p.add_argument("--width", type=int, default=8, help="channels of the first stage (default 8)")
    p.add_argument("--latent-dim", type=int, default=64, help="bottleneck size of vector-latent families")
    p.add_argument(
        "--set", dest="extra", action="append", type=_kv, default=[], metavar="KEY=VALUE",
        help="family setting stored in config.extra (e.g. kl_weight=1e-3, noise_std=0.2, steps=4)",
    )  # fmt: skip
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop after this many seconds of training (alone: train until then, however many epochs that is)",
    )
    p.add_argument("--no-augment", action="store_true", help="no random left-right flips")
    p.add_argument(
        "--domain-augment", type=float, default=1.0, metavar="S",
        help="strength of on-the-fly scanner variation (blur, gamma, gain, bias field, noise; default 1, 0 = off)",
    )  # fmt: skip
    p.add_argument(
        "--shape-augment", type=float, default=0.0, metavar="S",
        help="strength of on-the-fly anatomy changes (rotation, scaling, stretch, shear, shift, elastic warp; "
        "default 0 = off, 1 = up to 10 degrees, 12 %%, 4 px)",
    )  # fmt: skip
    p.add_argument(
        "--patience", type=int, default=None,
        help="stop after this many epochs without a better --select metric on validation (keeps the best epoch)",
    )  # fmt: skip
    p.add_argument(
        "--select", choices=("val_ap", "val_loss"), default="val_ap",
        help="validation metric that picks the kept epoch: pooled pixel AP of the map on validation lesions "
        "(default) or the validation loss",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from app.train import TrainOptions, train

    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    if args.time_limit is not None and not args.time_limit >= 0:
        from app.errors import OptionError

        raise OptionError(f"--time-limit must be >= 0 seconds, got {args.time_limit:g}")
    epochs = resolve_epochs(args.epochs, args.time_limit)

    if len(sys.argv) > 2 and sys.argv[1] == "train":
        cmd = "python main.py train " + shlex.join(sys.argv[2:])
    else:  # called as a function (tests): the equivalent command line
        cmd = f"python main.py train {args.family} --data {args.data} --out {args.out}"
        cmd += f" --epochs {args.epochs}" if args.epochs is not None else ""
        cmd += f" --time-limit {args.time_limit:g}" if args.time_limit is not None else ""
        cmd += " --resume" if args.resume else ""
    opts = TrainOptions(
        family=args.family,
        data=args.data,
        out=args.out,
        epochs=epochs,
        size=args.size,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        width=args.width,
        latent_dim=args.latent_dim,
        extra=dict(args.extra),
        time_limit=args.time_limit,
        augment=not args.no_augment,
        domain_augment=args.domain_augment,
        shape_augment=args.shape_augment,
        patience=args.patience,
        select=args.select,
        command=cmd,
    )
    card = train(opts, progress=not args.quiet)
    print(
        f"wrote {args.out}.safetensors/.json: {card['training']['epochs']} epochs in "
        f"{card['training']['training_time_s']} s, val_loss={card['final_val_loss']}"
    )
    return 0
