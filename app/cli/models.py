"""``models``: list the model zoo with what each card says."""

from __future__ import annotations

import argparse

HELP = "list the trained models in models/ (family, image size, eps/tau chosen on validation)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", default=None, help="model directory (default: the bundled models/)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.nets.checkpoint import read_card
    from app.nets.zoo import DEFAULT_MODEL, MODELS_DIR, list_models

    d = Path(args.dir) if args.dir else MODELS_DIR
    names = list_models(d)
    if not names:
        print(f"no models in {d}")
        return 0
    for name in names:
        card = read_card(d / name)
        cfg = card.get("config", {})
        chosen = card.get("chosen", {})
        mark = "*" if name == DEFAULT_MODEL else " "
        print(
            f"{mark} {name:<16} family={card.get('family', '?'):<10} size={cfg.get('image_size')} "
            f"eps={chosen.get('eps', '-')} tau={chosen.get('tau', '-')}"
        )
    return 0
